#!/bin/sh
# Delta benchmark: bytes fetched over HTTP for a realistic update of a
# file-system image, otagw's delta install against the full bundle,
# Debian's casync and zchunk, all in one run on the same two images.
#   v1: an ext4 image (SIZE_MIB, default 256) filled with files from /usr
#       through a loop mount;
#   v2: v1 loop-mounted again, about 1% of its files rewritten (a line
#       appended, written to a new file that replaces the old one, as a
#       package manager does), ADD_KIB of new files, 20 files removed.
# A counting server on 127.0.0.1 (scripts/countserver) serves every
# artefact and counts the body bytes it sends; every client gets v1 as its
# seed and must produce v2 byte for byte.
# Needs root (loop mounts), casync and zchunk (scripts/test-deps.sh).
# Usage: scripts/bench-delta.sh [SIZE_MIB]   BENCH_DIR picks the disk.
set -eu
cd "$(dirname "$0")/.."
MIB=${1:-256}
ADD_KIB=512
[ "$(id -u)" = 0 ] || { echo "bench-delta: needs root for loop mounts" >&2; exit 1; }
for t in casync zck zckdl mkfs.ext4 curl; do
	command -v $t >/dev/null || { echo "bench-delta: $t missing (sh scripts/test-deps.sh)" >&2; exit 1; }
done
DIR=$(mktemp -d -p "${BENCH_DIR:-/var/tmp}" otagw-bench-delta.XXXXXX)
MNT="$DIR/mnt"
SRV=""
cleanup() {
	mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"
	[ -z "$SRV" ] || kill "$SRV" 2>/dev/null || true
	rm -rf "$DIR"
}
trap cleanup EXIT INT TERM
mkdir -p "$MNT" "$DIR/www"

CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$DIR/otagw" ./cmd/otagw
go build -o "$DIR/countserver" ./scripts/countserver
go build -o "$DIR/chunkstat" ./scripts/chunkstat
"$DIR/otagw" keygen --out "$DIR/keys" >/dev/null
mkdir "$DIR/ring"
cp "$DIR/keys/signing.pub" "$DIR/ring/"

# v1: ext4 filled from /usr to about 70%.
truncate -s "${MIB}M" "$DIR/v1.img"
mkfs.ext4 -q -F -L bench "$DIR/v1.img"
mount -o loop "$DIR/v1.img" "$MNT"
fill=$((MIB * 7 / 10))
mkdir "$MNT/usr"
# The files of /usr in path order, up to about fill MiB (with their
# blocks), copied with tar.
( cd /usr && find share lib bin -xdev -type f -size -4M -printf '%s %p\n' 2>/dev/null | sort -k2 |
	awk -v max=$((fill * 1048576)) '{ s += $1 + 4096; if (s > max) exit; print $2 }' ) >"$DIR/list"
( cd /usr && tar -cf - -T "$DIR/list" 2>/dev/null ) | tar -xf - -C "$MNT/usr"
nfiles=$(find "$MNT/usr" -type f | wc -l)
umount "$MNT"

# v2: about 1% of the files rewritten, some added, 20 removed.
cp "$DIR/v1.img" "$DIR/v2.img"
mount -o loop "$DIR/v2.img" "$MNT"
find "$MNT/usr" -type f | sort >"$DIR/files"
awk 'NR % 100 == 50' "$DIR/files" | while read -r f; do
	{ cat "$f"; echo "otagw bench v2"; } >"$f.new" && mv "$f.new" "$f"
done
rewritten=$(awk 'NR % 100 == 50' "$DIR/files" | wc -l)
rewritten_kib=$(awk 'NR % 100 == 50' "$DIR/files" | xargs du -ck | tail -1 | cut -f1)
awk 'NR % 100 == 77' "$DIR/files" | head -20 | xargs rm -f
mkdir "$MNT/new"
head -c "${ADD_KIB}K" /dev/urandom >"$MNT/new/blob"
cp /etc/services "$MNT/new/" 2>/dev/null || true
umount "$MNT"

# Artefacts: the otagw bundle of v2 (as shipped: zstd, 256 KiB chunks),
# casync's index and store of v2, zchunk files of v1 and v2.
t0=$(date +%s.%N)
"$DIR/otagw" bundle create --key "$DIR/keys/signing.key" --compatible bench-gw --version 2.0.0 \
	"rootfs=$DIR/v2.img" -o "$DIR/www/v2.otab" >/dev/null
# Chunks cut by content (restic/chunker, 64 KiB on average, 256 KiB at most).
"$DIR/otagw" bundle create --key "$DIR/keys/signing.key" --compatible bench-gw --version 2.0.0 --chunking cdc \
	"rootfs=$DIR/v2.img" -o "$DIR/www/v2-cdc.otab" >/dev/null
# Fixed 64 KiB chunks: a finer grain for delta updates.
"$DIR/otagw" bundle create --key "$DIR/keys/signing.key" --compatible bench-gw --version 2.0.0 --chunk-size 65536 \
	"rootfs=$DIR/v2.img" -o "$DIR/www/v2-64k.otab" >/dev/null
casync make --store="$DIR/www/store" "$DIR/www/v2.caibx" "$DIR/v2.img" >/dev/null
zck -o "$DIR/v1.img.zck" "$DIR/v1.img" >/dev/null
zck -o "$DIR/www/v2.img.zck" "$DIR/v2.img" >/dev/null
bundle_b=$(stat -c %s "$DIR/www/v2.otab")
store_b=$(du -sb "$DIR/www/store" | cut -f1)
caibx_b=$(stat -c %s "$DIR/www/v2.caibx")
zck_b=$(stat -c %s "$DIR/www/v2.img.zck")

"$DIR/countserver" -dir "$DIR/www" -port-file "$DIR/port" 2>"$DIR/server.log" &
SRV=$!
i=0
until [ -s "$DIR/port" ]; do i=$((i + 1)); [ $i -lt 100 ] || exit 1; sleep 0.05; done
URL="http://127.0.0.1:$(cat "$DIR/port")"
count() { curl -s "$URL/__count"; }
field() { echo "$1" | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"; }
reset() { curl -s "$URL/__reset" >/dev/null; }
want=$(sha256sum <"$DIR/v2.img" | cut -d' ' -f1)
check() { [ "$(head -c "$(stat -c %s "$DIR/v2.img")" "$1" | sha256sum | cut -d' ' -f1)" = "$want" ] || { echo "bench-delta: $2 did not produce v2" >&2; exit 1; }; }

# otagw, full bundle.
truncate -s "${MIB}M" "$DIR/slot"
reset
"$DIR/otagw" bundle write "$URL/v2.otab" --slot-device "$DIR/slot" --keyring "$DIR/ring" --compatible bench-gw >/dev/null 2>"$DIR/err" || { cat "$DIR/err" >&2; exit 1; }
c=$(count); full_b=$(field "$c" bytes); full_r=$(field "$c" requests)
check "$DIR/slot" "otagw full install"

# otagw, delta from v1: the bundle as shipped (256 KiB chunks) and with 64 KiB chunks.
delta() { # BUNDLE CHUNK_BYTES
	rm -f "$DIR/slot"; truncate -s "${MIB}M" "$DIR/slot"
	reset
	"$DIR/otagw" bundle write "$URL/$1" --slot-device "$DIR/slot" --delta-from "$DIR/v1.img" --keyring "$DIR/ring" \
		--compatible bench-gw --json >"$DIR/delta.json" 2>"$DIR/err" || { cat "$DIR/err" >&2; exit 1; }
	c=$(count); delta_b=$(field "$c" bytes); delta_r=$(field "$c" requests); delta_open=$((delta_open + $(field "$c" open_ranges)))
	reused=$(sed -n 's/.*"reused_chunks":\([0-9]*\).*/\1/p' "$DIR/delta.json" | tail -1)
	chunks=$(( (MIB * 1048576 + $2 - 1) / $2 ))
	check "$DIR/slot" "otagw delta install of $1"
}
delta_open=0
delta v2-cdc.otab 65536
cdc_b=$delta_b cdc_r=$delta_r cdc_reused=$reused
cdc_chunks=$("$DIR/otagw" bundle info "$DIR/www/v2-cdc.otab" | sed -n 's/.* \([0-9]*\) chunks.*/\1/p' | head -1)
bundlecdc_b=$(stat -c %s "$DIR/www/v2-cdc.otab")
delta v2-64k.otab 65536
d64_b=$delta_b d64_r=$delta_r d64_reused=$reused d64_chunks=$chunks
bundle64_b=$(stat -c %s "$DIR/www/v2-64k.otab")
delta v2.otab 262144

# casync, seeded with v1.
reset
casync extract --store="$URL/store" --seed="$DIR/v1.img" "$URL/v2.caibx" "$DIR/ca.img" >/dev/null 2>"$DIR/err" || { cat "$DIR/err" >&2; exit 1; }
c=$(count); ca_b=$(field "$c" bytes); ca_r=$(field "$c" requests)
check "$DIR/ca.img" "casync extract"

# zchunk, seeded with v1's zchunk file.
reset
mkdir "$DIR/zckdl"
( cd "$DIR/zckdl" && zckdl -q -s "$DIR/v1.img.zck" "$URL/v2.img.zck" >/dev/null 2>"$DIR/err" ) || { cat "$DIR/err" >&2; exit 1; }
c=$(count); zck_got=$(field "$c" bytes); zck_r=$(field "$c" requests)
unzck -c "$DIR/zckdl/v2.img.zck" >"$DIR/zck.img"
check "$DIR/zck.img" "zckdl"

pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f%%", 100 * a / b }'; }
above() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > b) printf " (above)" }'; }
echo "delta benchmark: ${MIB} MiB ext4 from /usr, $nfiles files; v2: $rewritten rewritten ($rewritten_kib KiB), ${ADD_KIB} KiB + /etc/services added, 20 removed; load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-44s %12s %9s %13s\n' "what" "bytes sent" "requests" "of full bundle"
printf '%-44s %12s %9s %13s\n' "otagw full bundle install" "$full_b" "$full_r" "$(pct "$full_b" "$bundle_b")"
printf '%-44s %12s %9s %13s\n' "otagw delta install ($reused/$chunks chunks reused)" "$delta_b" "$delta_r" "$(pct "$delta_b" "$bundle_b")$(above "$delta_b" "$((bundle_b / 20))")"
printf '%-44s %12s %9s %13s\n' "  same, chunks cut by content ($cdc_reused/$cdc_chunks)" "$cdc_b" "$cdc_r" "$(pct "$cdc_b" "$bundlecdc_b")$(above "$cdc_b" "$((bundlecdc_b / 20))")"
printf '%-44s %12s %9s %13s\n' "  same, 64 KiB chunks ($d64_reused/$d64_chunks reused)" "$d64_b" "$d64_r" "$(pct "$d64_b" "$bundle64_b")$(above "$d64_b" "$((bundle64_b / 20))")"
printf '%-44s %12s %9s %13s\n' "casync extract --seed=v1 (index + chunks)" "$ca_b" "$ca_r" "$(pct "$ca_b" "$bundle_b")"
printf '%-44s %12s %9s %13s\n' "zckdl -s v1.zck" "$zck_got" "$zck_r" "$(pct "$zck_got" "$bundle_b")"
mf() { "$DIR/otagw" bundle info "$DIR/www/$1" | sed -n 's/^format *\([0-9]*\) (manifest \([0-9]*\) bytes)/format \1, \2/p'; }
echo "manifests (fetched whole by a delta install): 256 KiB chunks $(mf v2.otab) B; cdc $(mf v2-cdc.otab) B; 64 KiB chunks $(mf v2-64k.otab) B"
"$DIR/chunkstat" "$DIR/www/v2-cdc.otab" | sed -n 's/^ *payload rootfs: /cdc table: /p'
echo "sizes: otagw bundle $bundle_b B (cdc: $bundlecdc_b B, 64 KiB chunks: $bundle64_b B), casync store $store_b B + index $caibx_b B, zchunk file $zck_b B"
echo "otagw delta: $delta_open open-ended Range requests; goal <= 5% of the full bundle and <= casync:"
echo "  256 KiB chunks: $(pct "$delta_b" "$bundle_b")$(above "$delta_b" "$((bundle_b / 20))"), $(pct "$delta_b" "$ca_b") of casync$(above "$delta_b" "$ca_b")"
echo "  chunks cut by content: $(pct "$cdc_b" "$bundlecdc_b")$(above "$cdc_b" "$((bundlecdc_b / 20))"), $(pct "$cdc_b" "$ca_b") of casync$(above "$cdc_b" "$ca_b")"
echo "  64 KiB chunks: $(pct "$d64_b" "$bundle64_b")$(above "$d64_b" "$((bundle64_b / 20))"), $(pct "$d64_b" "$ca_b") of casync$(above "$d64_b" "$ca_b")"
