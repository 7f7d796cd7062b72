SUMMARY = "otagw: OTA updates for the gateway's A/B root filesystem and its MCUs"
DESCRIPTION = "One daemon and CLI: signed A/B rootfs bundles with U-Boot boot counting and \
watchdog-driven rollback, and signed firmware fan-out to STM32/ESP32 microcontrollers."
LICENSE = "CLOSED"

SRC_URI = "git://github.com/otagw/otagw.git;protocol=https;branch=main"
SRCREV = "${AUTOREV}"
PV = "0.1+git"
S = "${WORKDIR}/git"

GO_IMPORT = "github.com/otagw/otagw"
GO_INSTALL = "${GO_IMPORT}/cmd/otagw"
GO_LINKSHARED = ""
GOBUILDFLAGS:append = " -trimpath"
export CGO_ENABLED = "0"

inherit go-mod systemd useradd

# go-mod fetches modules at do_compile; with BB_NO_NETWORK, vendor them with
# `go mod vendor` in a bbappend or list them with go-mod-update-modules.
do_compile[network] = "1"

do_install:append() {
    install -d ${D}${sysconfdir}/otagw
    install -m 0644 ${S}/src/${GO_IMPORT}/configs/otagw.yaml ${D}${sysconfdir}/otagw/otagw.yaml
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/src/${GO_IMPORT}/packaging/systemd/otagw.service ${D}${systemd_system_unitdir}/
}

SYSTEMD_SERVICE:${PN} = "otagw.service"
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system otagw; --system otagw-admin"
CONFFILES:${PN} = "${sysconfdir}/otagw/otagw.yaml"
RDEPENDS:${PN} = "libubootenv-bin"
FILES:${PN} += "${systemd_system_unitdir}/otagw.service"
