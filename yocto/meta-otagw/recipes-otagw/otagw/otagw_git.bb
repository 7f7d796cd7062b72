SUMMARY = "otagw: OTA updates for the gateway's A/B root filesystem and its MCUs"
DESCRIPTION = "One daemon and CLI: signed A/B rootfs bundles with U-Boot boot counting and \
watchdog-driven rollback, and signed firmware fan-out to STM32/ESP32 microcontrollers."
HOMEPAGE = "https://github.com/otagw/otagw"
SECTION = "admin"
# otagw is Apache-2.0; the binary also contains the Go modules listed with
# their licenses in otagw-licenses.inc (generated, like otagw-go-mods.inc).
LICENSE = "Apache-2.0 & ${GO_MOD_LICENSES}"
LIC_FILES_CHKSUM = "file://src/${GO_IMPORT}/LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"
require otagw-licenses.inc

# The project's version (the VERSION file at the top of the source tree;
# tests/yocto_test.go checks that the two agree).
PV = "0.1.0+git"

# The pinned release. To build a local checkout instead, set in local.conf:
#   OTAGW_SRC_URI = "git:///path/to/otagw;protocol=file;branch=my-branch"
#   SRCREV:pn-otagw = "${AUTOREV}"
# (bitbake fetches committed work only; otagw-go-mods.inc must match the
# checkout's go.sum: `go run ./scripts/yocto-gomods` rewrites it.)
OTAGW_SRC_URI ?= "git://github.com/otagw/otagw.git;protocol=https;branch=main"
SRC_URI = "${OTAGW_SRC_URI};destsuffix=git/src/${GO_IMPORT}/"
SRCREV = "c3a56658c5eb9c55c01b951f1190c7dd7fe21d2c"
S = "${WORKDIR}/git"

# Every Go module as a gomod:// entry: fetched (and checksummed) in do_fetch only.
require otagw-go-mods.inc

GO_IMPORT = "github.com/otagw/otagw"
GO_INSTALL = "${GO_IMPORT}/cmd/otagw"
GO_EXTRA_LDFLAGS = "-X ${GO_IMPORT}/internal/buildinfo.Version=${PV}"

inherit go-mod systemd useradd

# Nothing but do_fetch may reach the network: the Go command finds every
# module in the module cache the gomod entries filled, or fails. go.mod
# names the Go release otagw needs; a too-old Go toolchain stops with a
# clear error instead of downloading a newer one.
export GOPROXY = "off"
export GOTOOLCHAIN = "local"

do_install:append() {
	install -d ${D}${sysconfdir}/otagw/keys
	install -m 0644 ${S}/src/${GO_IMPORT}/configs/otagw.yaml ${D}${sysconfdir}/otagw/otagw.yaml
	install -d ${D}${systemd_system_unitdir}
	install -m 0644 ${S}/src/${GO_IMPORT}/packaging/systemd/otagw.service \
		${S}/src/${GO_IMPORT}/packaging/systemd/otagw-committed.target \
		${D}${systemd_system_unitdir}/
}

# otagw.service is enabled; otagw-committed.target has no [Install]
# section: the daemon starts it once the booted slot is committed.
SYSTEMD_SERVICE:${PN} = "otagw.service"
FILES:${PN} += "${systemd_system_unitdir}/otagw.service ${systemd_system_unitdir}/otagw-committed.target"
CONFFILES:${PN} = "${sysconfdir}/otagw/otagw.yaml"

# otagw: read access to the local API; otagw-admin: install and flash.
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system otagw; --system otagw-admin"

# No RDEPENDS: otagw reads and writes the U-Boot environment itself (its
# own codec for fw_env.config, both copies, CRC32), so it needs neither
# libubootenv nor u-boot-fw-utils. The BSP recipes otagw-boot-script and
# otagw-fw-env belong in the image beside it (see the layer's README).
