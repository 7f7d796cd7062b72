#!/bin/sh
# Installs the Debian packages the tests use, only those that are missing.
# Runs "apt-get update" at most once. Safe to run again and again.
set -eu

# package:command-or-path that proves it is installed
NEEDS="
u-boot-tools:/usr/bin/mkenvimage
libubootenv-tool:/usr/bin/fw_printenv
stm32flash:/usr/bin/stm32flash
systemd:/usr/bin/systemd-analyze
openssl:/usr/bin/openssl
qemu-system-x86:/usr/bin/qemu-system-x86_64
qemu-system-arm:/usr/bin/qemu-system-aarch64
u-boot-qemu:/usr/lib/u-boot/qemu_arm64/u-boot.bin
cpio:/usr/bin/cpio
util-linux:/usr/sbin/losetup
e2fsprogs:/usr/sbin/mkfs.ext4
time:/usr/bin/time
debootstrap:/usr/sbin/debootstrap
systemd-container:/usr/bin/systemd-nspawn
lintian:/usr/bin/lintian
nodejs:/usr/bin/node
npm:/usr/bin/npm
"

# esptool-js (npm) for the third-party check of the ESP32 simulator
# (tests/esptooljs_test.go), pinned in tests/esptooljs/package.json.
esptooljs() {
	d="$(dirname "$0")/../tests/esptooljs"
	[ -e "$d/node_modules/esptool-js/package.json" ] && return 0
	echo "test-deps: npm install esptool-js into $d" >&2
	(cd "$d" && npm install --no-audit --no-fund --loglevel=error >&2)
}

missing=""
for n in $NEEDS; do
	pkg=${n%%:*}
	path=${n#*:}
	[ -e "$path" ] || missing="$missing $pkg"
done

if [ -z "$missing" ]; then
	esptooljs
	exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
	SUDO="sudo"
fi
echo "test-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >&2
esptooljs
