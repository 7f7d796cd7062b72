SUMMARY = "fw_env.config for otagw and libubootenv (fw_printenv / fw_setenv)"
DESCRIPTION = "Installs /etc/fw_env.config describing where U-Boot keeps its \
environment. Pick the layout with OTAGW_FW_ENV_CONFIG in the machine or \
local.conf; the offsets must match the U-Boot build byte for byte."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

# One of: fw_env.config.emmc, fw_env.config.emmc-boot, fw_env.config.sd,
# fw_env.config.mtd-nor, fw_env.config.mtd-nand (copies of packaging/uboot/),
# or a file of your own added to SRC_URI in a bbappend.
OTAGW_FW_ENV_CONFIG ?= "fw_env.config.emmc"

SRC_URI = "file://${OTAGW_FW_ENV_CONFIG}"

# Yocto >= 5.1 unpacks into UNPACKDIR; older releases into WORKDIR.
S = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
	install -Dm 0644 ${S}/${OTAGW_FW_ENV_CONFIG} ${D}${sysconfdir}/fw_env.config
}

FILES:${PN} = "${sysconfdir}/fw_env.config"
CONFFILES:${PN} = "${sysconfdir}/fw_env.config"
# u-boot's own recipe can also install /etc/fw_env.config (when a
# fw_env.config is in its SRC_URI): use one or the other.
PACKAGE_ARCH = "${MACHINE_ARCH}"
