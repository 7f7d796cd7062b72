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
chrpath:/usr/bin/chrpath
gawk:/usr/bin/gawk
diffstat:/usr/bin/diffstat
lz4:/usr/bin/lz4
zstd:/usr/bin/zstd
file:/usr/bin/file
locales:/usr/sbin/locale-gen
can-utils:/usr/bin/candump
nginx:/usr/sbin/nginx
casync:/usr/bin/casync
zchunk:/usr/bin/zckdl
curl:/usr/bin/curl
"

# esptool-js (npm) for the third-party check of the ESP32 simulator
# (tests/esptooljs_test.go), pinned in tests/esptooljs/package.json.
esptooljs() {
	d="$(dirname "$0")/../tests/esptooljs"
	[ -e "$d/node_modules/esptool-js/package.json" ] && return 0
	echo "test-deps: npm install esptool-js into $d" >&2
	(cd "$d" && npm install --no-audit --no-fund --loglevel=error >&2)
}

# bitbake (tests/yocto_test.go) refuses to start without this locale.
gen_locale() {
	echo "test-deps: generating the locale en_US.UTF-8" >&2
	$SUDO sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen
	grep -q '^en_US.UTF-8 UTF-8' /etc/locale.gen || echo 'en_US.UTF-8 UTF-8' | $SUDO tee -a /etc/locale.gen >/dev/null
	$SUDO locale-gen >&2
}
need_locale() {
	! locale -a 2>/dev/null | grep -qix 'en_US.utf-\{0,1\}8'
}

missing=""
for n in $NEEDS; do
	pkg=${n%%:*}
	path=${n#*:}
	[ -e "$path" ] || missing="$missing $pkg"
done

SUDO=""
if [ "$(id -u)" != 0 ]; then
	SUDO="sudo"
fi

if [ -z "$missing" ]; then
	if need_locale; then gen_locale; fi
	esptooljs
	exit 0
fi
echo "test-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >&2
if need_locale; then gen_locale; fi
esptooljs
