#!/bin/sh
# Builds dist/otagw_VERSION_ARCH.deb with dpkg-deb from a staged tree.
# Usage: scripts/deb.sh [ARCH...]   (amd64 arm64 armhf; default: amd64)
# DIST names the output directory (default dist/); VERSION overrides git's.
set -eu
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
# A tag v1.2.3 gives 1.2.3 (1.2.3+5+gabc1234 after it); no tag: the VERSION
# file's version (the Yocto recipe's PV too) and the commit, 0.1.0+gHASH.
if [ -z "${VERSION:-}" ]; then
	VERSION=$(git describe --tags --match 'v[0-9]*' 2>/dev/null | sed 's/^v//; s/-/+/g' || true)
	[ -n "$VERSION" ] || VERSION="$(cat VERSION)+g$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
fi
DIST=${DIST:-dist}
mkdir -p "$DIST"
for arch in ${*:-amd64}; do
	case $arch in
	amd64) goarch=amd64 goarm= ;;
	arm64) goarch=arm64 goarm= ;;
	armhf) goarch=arm goarm=7 ;;
	*) echo "deb: unknown architecture $arch" >&2; exit 2 ;;
	esac
	root=$(mktemp -d)
	trap 'rm -rf "$root"' EXIT
	install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/otagw" \
		"$root/usr/share/otagw/uboot" "$root/usr/share/doc/otagw" "$root/usr/share/lintian/overrides"
	CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm go build -trimpath \
		-ldflags "-s -w -X github.com/otagw/otagw/internal/buildinfo.Version=$VERSION" -o "$root/usr/bin/otagw" ./cmd/otagw
	install -m 0644 packaging/systemd/otagw.service packaging/systemd/otagw-committed.target "$root/lib/systemd/system/"
	install -m 0644 configs/otagw.yaml "$root/etc/otagw/otagw.yaml"
	install -m 0644 packaging/uboot/boot.cmd packaging/uboot/fw_env.config.* packaging/uboot/uboot-env-bootcount.txt "$root/usr/share/otagw/uboot/"
	install -m 0644 packaging/debian/copyright "$root/usr/share/doc/otagw/copyright"
	printf 'otagw (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- otagw maintainers <maintainers@otagw.invalid>  %s\n' \
		"$VERSION" "$VERSION" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")" |
		gzip -9n >"$root/usr/share/doc/otagw/changelog.gz"
	install -m 0644 packaging/debian/lintian-overrides "$root/usr/share/lintian/overrides/otagw"
	for s in postinst prerm postrm; do install -m 0755 "packaging/debian/$s" "$root/DEBIAN/$s"; done
	echo /etc/otagw/otagw.yaml >"$root/DEBIAN/conffiles"
	size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
	sed "s/@VERSION@/$VERSION/; s/@ARCH@/$arch/; s/@SIZE@/$size/" packaging/debian/control.in >"$root/DEBIAN/control"
	out="$DIST/otagw_${VERSION}_${arch}.deb"
	dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
	echo "$out"
	rm -rf "$root"
	trap - EXIT
done
