# otagw A/B boot script for U-Boot (hush).
#
# Single source of truth: abboot/bootscript/boot.cmd in the otagw tree. The
# copies in yocto/meta-otagw/recipes-bsp/u-boot/files/ and packaging/uboot/
# are checked byte for byte by a test; otagw's Go model of the bootloader runs
# this very text. Compile it with:
#
#   mkimage -A arm -T script -C none -n "otagw boot script" -d boot.cmd boot.scr
#
# Two flavours, chosen by the environment variable otagw_mode:
#
#  * (default) RAUC convention, otagw backend "uboot":
#      BOOT_ORDER   slots in boot order, primary first ("A B")
#      BOOT_A_LEFT  tries left for slot A, hexadecimal (setexpr writes hex)
#      BOOT_B_LEFT  tries left for slot B
#    The first slot in BOOT_ORDER with tries left is booted and its counter
#    is decremented and saved BEFORE the kernel starts. With no slot left,
#    all counters are reset to 3 and the board resets.
#
#  * otagw_mode=bootcount, otagw backend "uboot-bootcount": U-Boot's own
#    CONFIG_BOOTCOUNT_LIMIT + CONFIG_BOOTCOUNT_ENV count the tries (bootcount,
#    bootlimit, upgrade_available); once bootcount > bootlimit U-Boot runs
#    altbootcmd, which must be "setenv otagw_altboot 1; run bootcmd". This
#    script then switches boot_slot to the other slot, records the failed one
#    in boot_bad, clears upgrade_available and bootcount, and saves.
#
# Board-specific variables (set in the default environment):
#   otagw_load_A, otagw_load_B  commands loading kernel (and dtb) of the slot
#   otagw_root_A, otagw_root_B  root= argument of the slot
#   otagw_boot                  boots what was loaded, e.g.
#                               "bootz ${kernel_addr_r} - ${fdt_addr_r}"
#   default_bootargs            console= and the like
# The kernel command line always gets rauc.slot=<slot>: otagw reads the
# booted slot from it, never from the environment.

setenv otagw_slot
if test "${otagw_mode}" = "bootcount"; then
	test -n "${boot_slot}" || setenv boot_slot A
	if test "${otagw_altboot}" = "1"; then
		setenv otagw_altboot
		echo "otagw: slot ${boot_slot} used up its tries, falling back"
		setenv boot_bad "${boot_bad} ${boot_slot}"
		if test "${boot_slot}" = "A"; then
			setenv boot_slot B
		else
			setenv boot_slot A
		fi
		setenv upgrade_available 0
		setenv bootcount 0
		saveenv
	fi
	setenv otagw_slot "${boot_slot}"
else
	test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
	test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
	test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3

	for BOOT_SLOT in "${BOOT_ORDER}"; do
		if test -z "${otagw_slot}"; then
			if test "${BOOT_SLOT}" = "A"; then
				if test 0x${BOOT_A_LEFT} -gt 0; then
					echo "otagw: slot A, ${BOOT_A_LEFT} tries left"
					setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
					setenv otagw_slot A
				fi
			elif test "${BOOT_SLOT}" = "B"; then
				if test 0x${BOOT_B_LEFT} -gt 0; then
					echo "otagw: slot B, ${BOOT_B_LEFT} tries left"
					setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
					setenv otagw_slot B
				fi
			fi
		fi
	done

	if test -z "${otagw_slot}"; then
		echo "otagw: no slot has tries left, resetting all to 3"
		setenv BOOT_A_LEFT 3
		setenv BOOT_B_LEFT 3
		saveenv
		reset
	fi
	saveenv
fi

echo "otagw: booting slot ${otagw_slot}"
if test "${otagw_slot}" = "A"; then
	setenv bootargs "${default_bootargs} root=${otagw_root_A} rauc.slot=A"
	run otagw_load_A
else
	setenv bootargs "${default_bootargs} root=${otagw_root_B} rauc.slot=B"
	run otagw_load_B
fi
run otagw_boot
# Only reached when loading or booting failed: the try is used up already,
# so a reset moves on to the next try or slot.
echo "otagw: boot of slot ${otagw_slot} failed, resetting"
reset
