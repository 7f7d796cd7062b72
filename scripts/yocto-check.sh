#!/bin/sh
# `make yocto-check`: runs yocto-check-layer (the Yocto Project Compatible
# checks) on yocto/meta-otagw with the walnascar poky snapshot from
# ../shared/yocto/ (or OTAGW_POKY=DIR, a poky checkout of your own), offline.
# It took about 24 minutes on 2 cores here (961 s of checks). bitbake refuses to run as root, so as
# root this runs it as the user otagw-yocto (created when missing).
set -eu
cd "$(dirname "$0")/.."
repo=$(pwd)
cache=${OTAGW_YOCTO_CACHE:-${TMPDIR:-/tmp}/otagw-yocto}
user=otagw-yocto
sh scripts/test-deps.sh
if [ "$(id -u)" = 0 ]; then
	id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
	run() { su "$user" -s /bin/bash -c "$1"; }
else
	run() { bash -c "$1"; }
fi
mkdir -p "$cache"
[ "$(id -u)" != 0 ] || chown "$user" "$cache"
if [ -n "${OTAGW_POKY:-}" ]; then
	poky=$OTAGW_POKY
else
	tarball=$(ls ../shared/yocto/poky-walnascar-*.tar.xz 2>/dev/null | head -1)
	[ -n "$tarball" ] || { echo "yocto-check: no ../shared/yocto/poky-walnascar-*.tar.xz and no OTAGW_POKY" >&2; exit 1; }
	name=$(basename "$tarball" .tar.xz)
	poky=$cache/$name/poky
	if [ ! -f "$cache/$name/.complete" ]; then
		rm -rf "$cache/$name"
		run "mkdir -p '$cache/$name' && tar -xJf '$(realpath "$tarball")' -C '$cache/$name' && touch '$cache/$name/.complete'"
	fi
fi
# A copy of the layer the unprivileged user can read, wherever the repo is.
work=$cache/check-layer
rm -rf "$work"
run "mkdir -p '$work'"
cp -r yocto/meta-otagw "$work/"
[ "$(id -u)" != 0 ] || chown -R "$user" "$work"
run "export LANG=en_US.UTF-8 LC_ALL=en_US.UTF-8 && cd '$poky' && . ./oe-init-build-env '$work/build' >/dev/null &&
	grep -q '^BB_NO_NETWORK' conf/local.conf || echo 'BB_NO_NETWORK = \"1\"' >>conf/local.conf;
	yocto-check-layer --no-auto-dependency '$work/meta-otagw'" >"$cache/yocto-check-layer.log" 2>&1 ||
	{ tail -40 "$cache/yocto-check-layer.log"; echo "yocto-check: failed, the whole log: $cache/yocto-check-layer.log" >&2; exit 1; }
tail -20 "$cache/yocto-check-layer.log"
