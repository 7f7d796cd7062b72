#!/bin/sh
# Installs an update into a loop-device slot and compares it with the
# physical limits measured in the same run on the same image and device:
#   - dd if=IMAGE of=LOOPDEV bs=4M oflag=direct conv=fsync  (raw write)
#   - sha256sum IMAGE                                      (one hash pass)
# For each size (default 1 GiB and 256 MiB; the image is half random, half
# real file-system content from /usr, so about half of it compresses):
#   bundle create time and size, `otagw bundle write` time (the same
#   Installer the daemon runs: verify, decompress, hash, write, fsync,
#   read back) and its peak RSS from /usr/bin/time -v.
# Needs root (losetup). Usage: scripts/bench-rootfs.sh [SIZE_MIB ...]
#   BENCH_DIR picks the disk (default /var/tmp); OTAGW uses a prebuilt binary.
set -eu
cd "$(dirname "$0")/.."
SIZES=${*:-"1024 256"}
[ "$(id -u)" = 0 ] || { echo "bench-rootfs: needs root for loop devices" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench-rootfs: /usr/bin/time missing (Debian package time)" >&2; exit 1; }
DIR=$(mktemp -d -p "${BENCH_DIR:-/var/tmp}" otagw-bench-rootfs.XXXXXX)
LOOP=""
cleanup() {
	[ -z "$LOOP" ] || losetup -d "$LOOP" || true
	rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

if [ -n "${OTAGW:-}" ]; then
	cp "$OTAGW" "$DIR/otagw"
else
	# As shipped (make build): static, stripped. Binary pages count in RSS.
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$DIR/otagw" ./cmd/otagw
fi
"$DIR/otagw" keygen --out "$DIR/keys" >/dev/null
mkdir "$DIR/ring"
cp "$DIR/keys/signing.pub" "$DIR/ring/"

now() { date +%s.%N; }
diff_s() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
maxf() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }
rss_kib() { awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' "$1"; }
warm() { cat "$@" >/dev/null; }

echo "rootfs install benchmark: $(nproc) CPUs, $(awk -F: '/model name/ { print $2; exit }' /proc/cpuinfo | sed 's/^ *//'), slot: loop device on $(df -P "$DIR" | awk 'NR==2 { print $1 }')"
printf '%-8s %-34s %9s %10s %9s\n' "size" "what" "seconds" "x limit" "peak RSS"
for mib in $SIZES; do
	img="$DIR/img.$mib"
	half=$((mib / 2))
	head -c "${half}M" /dev/urandom >"$img"
	# Real, compressible content: the files under /usr, cycled as needed.
	while [ "$(stat -c %s "$img")" -lt $((mib * 1048576)) ]; do
		tar -cf - /usr/share /usr/lib 2>/dev/null | head -c $((mib * 1048576 - $(stat -c %s "$img"))) >>"$img" || true
	done

	# Bundle creation.
	warm "$img"
	t0=$(now)
	/usr/bin/time -v -o "$DIR/create.time" "$DIR/otagw" bundle create --key "$DIR/keys/signing.key" \
		--compatible bench-gw --version 1.0.0 "rootfs=$img" -o "$DIR/b.otab" >/dev/null
	t1=$(now)
	create=$(diff_s "$t0" "$t1")
	bsize=$(stat -c %s "$DIR/b.otab")
	rm -f "$DIR/slot.$mib"
	truncate -s "$((mib + 16))M" "$DIR/slot.$mib"
	LOOP=$(losetup -f --show "$DIR/slot.$mib")

	# Limit 1: raw write of the image.
	warm "$img"
	t0=$(now)
	dd if="$img" of="$LOOP" bs=4M oflag=direct conv=fsync status=none
	t1=$(now)
	dd_s=$(diff_s "$t0" "$t1")
	# Limit 2: one sha256 pass over the image.
	warm "$img"
	t0=$(now)
	sha256sum "$img" >/dev/null
	t1=$(now)
	sha_s=$(diff_s "$t0" "$t1")
	limit=$(maxf "$dd_s" "$sha_s")
	# For reference: the fastest sha256 on this CPU (OpenSSL, SHA extensions).
	ossl_s=-
	if command -v openssl >/dev/null; then
		warm "$img"
		t0=$(now)
		openssl dgst -sha256 "$img" >/dev/null
		t1=$(now)
		ossl_s=$(diff_s "$t0" "$t1")
	fi

	# The install: fill the slot with other bytes first, so the result means something.
	dd if=/dev/zero of="$LOOP" bs=4M count="$((mib / 4))" oflag=direct conv=fsync status=none
	warm "$DIR/b.otab"
	t0=$(now)
	/usr/bin/time -v -o "$DIR/install.time" "$DIR/otagw" bundle write "$DIR/b.otab" --slot-device "$LOOP" \
		--keyring "$DIR/ring" --compatible bench-gw >/dev/null 2>"$DIR/install.err" || { cat "$DIR/install.err" >&2; exit 1; }
	t1=$(now)
	inst_s=$(diff_s "$t0" "$t1")
	cmp -n "$((mib * 1048576))" "$img" "$LOOP" || { echo "bench-rootfs: slot differs from the image" >&2; exit 1; }

	# The same install through the daemon (otagw install over its API): its
	# time and the daemon's peak RSS (VmHWM), which includes its API server,
	# logging and state, not just the installer.
	dd if=/dev/zero of="$LOOP" bs=4M count="$((mib / 4))" oflag=direct conv=fsync status=none
	truncate -s 1M "$DIR/slotA"
	echo "rauc.slot=A" >"$DIR/cmdline"
	cat >"$DIR/daemon.yaml" <<YAML
daemon: {socket: $DIR/otagw.sock, state_dir: $DIR/state, reboot_command: [/bin/false]}
boot: {backend: file, file: $DIR/bootenv.txt, cmdline: $DIR/cmdline}
rootfs:
  slots:
    - {name: rootfs.0, class: rootfs, device: $DIR/slotA, bootname: A}
    - {name: rootfs.1, class: rootfs, device: $LOOP, bootname: B}
update: {keyring: $DIR/ring, compatible: bench-gw}
watchdog: {enabled: false}
YAML
	rm -rf "$DIR/state" "$DIR/bootenv.txt"
	"$DIR/otagw" daemon --config "$DIR/daemon.yaml" --log-format json 2>"$DIR/daemon.log" &
	dpid=$!
	i=0
	until "$DIR/otagw" status --socket "$DIR/otagw.sock" >/dev/null 2>&1; do
		i=$((i + 1)); [ $i -lt 200 ] || { cat "$DIR/daemon.log" >&2; exit 1; }
		sleep 0.05
	done
	idle_kib=$(awk '/^VmHWM/ { print $2 }' /proc/$dpid/status)
	warm "$DIR/b.otab"
	# Sample the daemon's anonymous memory (heap, stacks: what it really
	# allocates; the rest of RSS is clean pages of the binary) while it works.
	( while kill -0 $dpid 2>/dev/null; do awk '/^RssAnon/ { print $2 }' /proc/$dpid/status 2>/dev/null; sleep 0.02; done ) >"$DIR/anon.samples" &
	sampler=$!
	t0=$(now)
	"$DIR/otagw" install --socket "$DIR/otagw.sock" "$DIR/b.otab" >/dev/null 2>"$DIR/install.err" || { cat "$DIR/install.err" "$DIR/daemon.log" >&2; exit 1; }
	t1=$(now)
	dinst_s=$(diff_s "$t0" "$t1")
	daemon_kib=$(awk '/^VmHWM/ { print $2 }' /proc/$dpid/status)
	kill -TERM $dpid
	wait $dpid || true
	wait $sampler 2>/dev/null || true
	anon_kib=$(sort -n "$DIR/anon.samples" | tail -1)
	cmp -n "$((mib * 1048576))" "$img" "$LOOP" || { echo "bench-rootfs: slot differs from the image (daemon)" >&2; exit 1; }
	losetup -d "$LOOP"
	LOOP=""
	rm -f "$DIR/slot.$mib"

	printf '%-8s %-34s %9s %10s %9s\n' "${mib}M" "dd oflag=direct conv=fsync" "$dd_s" "$(ratio "$dd_s" "$limit")" "-"
	printf '%-8s %-34s %9s %10s %9s\n' "${mib}M" "sha256sum" "$sha_s" "$(ratio "$sha_s" "$limit")" "-"
	printf '%-8s %-34s %9s %10s %9s\n' "${mib}M" "(openssl dgst -sha256, reference)" "$ossl_s" "-" "-"
	printf '%-8s %-34s %9s %10s %9s\n' "${mib}M" "otagw bundle write (install)" "$inst_s" "$(ratio "$inst_s" "$limit")" "$(($(rss_kib "$DIR/install.time") / 1024)) MiB"
	[ "$ossl_s" = - ] || printf '%-8s %-34s %9s %10s\n' "${mib}M" "  install / max(dd, openssl)" "" "$(ratio "$inst_s" "$(maxf "$dd_s" "$ossl_s")")"
	printf '%-8s %-34s %9s %10s %9s\n' "${mib}M" "otagw install via the daemon" "$dinst_s" "$(ratio "$dinst_s" "$limit")" "$((daemon_kib / 1024)) MiB"
	printf '%-8s %-34s %9s %10s %9s\n' "${mib}M" "  (daemon idle before the install)" "" "" "$((idle_kib / 1024)) MiB"
	printf '%-8s %-34s %9s %10s %9s\n' "${mib}M" "  (daemon anonymous memory, peak)" "" "" "$((anon_kib / 1024)) MiB"
	printf '%-8s %-34s %9s %10s %9s\n' "${mib}M" "otagw bundle create" "$create" "-" "$(($(rss_kib "$DIR/create.time") / 1024)) MiB"
	printf '%-8s %-34s %9s\n' "${mib}M" "bundle size / image size" "$bsize / $((mib * 1048576)) = $(ratio "$bsize" "$((mib * 1048576))")"
	rm -f "$img" "$DIR/b.otab"
done
