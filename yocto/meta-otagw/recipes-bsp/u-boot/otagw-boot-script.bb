SUMMARY = "otagw A/B boot script for U-Boot (boot.scr)"
DESCRIPTION = "Compiles otagw's boot.cmd (RAUC-style BOOT_ORDER / BOOT_x_LEFT \
boot counting, or U-Boot bootcount with otagw_mode=bootcount) into boot.scr \
and installs it to /boot and the deploy directory."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

# boot.cmd is a byte-identical copy of abboot/bootscript/boot.cmd in the
# otagw source tree (checked by go test ./abboot/bootscript).
SRC_URI = "file://boot.cmd"

# Yocto >= 5.1 unpacks into UNPACKDIR; older releases into WORKDIR.
S = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}"

DEPENDS = "u-boot-mkimage-native"

inherit kernel-arch deploy

do_configure[noexec] = "1"

do_compile() {
	uboot-mkimage -A ${UBOOT_ARCH} -T script -C none -n "otagw boot script" \
		-d ${S}/boot.cmd ${B}/boot.scr
}

do_install() {
	install -Dm 0644 ${B}/boot.scr ${D}/boot/boot.scr
}

do_deploy() {
	install -Dm 0644 ${B}/boot.scr ${DEPLOYDIR}/boot.scr
}
addtask deploy after do_compile before do_build

FILES:${PN} = "/boot/boot.scr"
PACKAGE_ARCH = "${MACHINE_ARCH}"
