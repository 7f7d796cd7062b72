#!/bin/sh
# Installs an update into a loop-device slot and compares it with the
# physical limit measured in the same run on the same image and device:
#   limit = max(dd if=IMAGE of=LOOPDEV bs=4M oflag=direct conv=fsync,
#               openssl dgst -sha256 IMAGE)
# (a raw write of the image to the same prepared slot, and the fastest
# sha256 on this CPU). The image is half random, half real file-system
# content from /usr, so about half of it compresses.
# For the first size (default 1 GiB):
#   - `otagw bundle create` (zstd, signed): time beside the bundle's size;
#   - `otagw bundle write` of the uncompressed and of the zstd bundle (the
#     Installer the daemon runs: verify, decompress, hash, write, sync,
#     read back): wall and CPU time, each as a ratio to the limit
#     (goals: 1.3x uncompressed, 1.5x zstd);
# for every size (default 1 GiB and 4 GiB): `otagw install` through the
# daemon, and the daemon's peak RSS (VmHWM; goal 14 MiB, flat in size),
# with its largest anonymous RSS (sampled) and its file-backed pages.
# "above" marks a figure above its goal.
# Needs root (losetup). Usage: scripts/bench-rootfs.sh [SIZE_MIB ...]
#   BENCH_DIR picks the disk (default /var/tmp); OTAGW uses a prebuilt binary.
set -eu
cd "$(dirname "$0")/.."
SIZES=${*:-"1024 4096"}
[ "$(id -u)" = 0 ] || { echo "bench-rootfs: needs root for loop devices" >&2; exit 1; }
for t in /usr/bin/time openssl losetup; do
	command -v $t >/dev/null || { echo "bench-rootfs: $t missing (sh scripts/test-deps.sh)" >&2; exit 1; }
done
DIR=$(mktemp -d -p "${BENCH_DIR:-/var/tmp}" otagw-bench-rootfs.XXXXXX)
LOOP=""
DPID=""
cleanup() {
	[ -z "$DPID" ] || kill "$DPID" 2>/dev/null || true
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
above() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > b) printf " above" }'; }
warm() { cat "$@" >/dev/null; }
# /usr/bin/time -f "%e %U %S %M": wall, user, sys, max RSS KiB
tfield() { awk -v f="$2" 'END { print $f }' "$1"; }
cpu() { awk '{ printf "%.2f", $2 + $3 }' "$1"; }
mib1() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# sample_anon PID FILE: the largest RssAnon (KiB) of PID, every 0.1 s, into
# FILE until FILE.stop exists or PID ends.
sample_anon() {
	max=0
	while [ ! -e "$2.stop" ] && kill -0 "$1" 2>/dev/null; do
		a=$(awk '/^RssAnon/ { print $2 }' "/proc/$1/status" 2>/dev/null || true)
		[ "${a:-0}" -le "$max" ] || max=$a
		echo "$max" >"$2"
		sleep 0.1
	done
}

echo "rootfs install benchmark: $(nproc) CPUs, $(awk -F: '/model name/ { print $2; exit }' /proc/cpuinfo | sed 's/^ *//'), slot: loop device on $(df -P "$DIR" | awk 'NR==2 { print $1 }')"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %-40s %8s %8s %9s %9s %9s\n' "size" "what" "wall s" "CPU s" "wall/lim" "CPU/lim" "peak RSS"
first=1
for mib in $SIZES; do
	img="$DIR/img.$mib"
	half=$((mib / 2))
	head -c "${half}M" /dev/urandom >"$img"
	# Real, compressible content: the files under /usr, cycled as needed.
	while [ "$(stat -c %s "$img")" -lt $((mib * 1048576)) ]; do
		tar -cf - /usr/share /usr/lib 2>/dev/null | head -c $((mib * 1048576 - $(stat -c %s "$img"))) >>"$img" || true
	done

	# Bundle creation (zstd where it pays, signed).
	warm "$img"
	/usr/bin/time -f "%e %U %S %M" -o "$DIR/create.time" "$DIR/otagw" bundle create --key "$DIR/keys/signing.key" \
		--compatible bench-gw --version 1.0.0 "rootfs=$img" -o "$DIR/b.otab" >/dev/null
	bsize=$(stat -c %s "$DIR/b.otab")
	if [ $first = 1 ]; then
		"$DIR/otagw" bundle create --key "$DIR/keys/signing.key" --compress none \
			--compatible bench-gw --version 1.0.0 "rootfs=$img" -o "$DIR/raw.otab" >/dev/null
	fi
	rm -f "$DIR/slot.$mib"
	truncate -s "$((mib + 16))M" "$DIR/slot.$mib"
	LOOP=$(losetup -f --show "$DIR/slot.$mib")

	# The limit: a raw write of the image to the slot, and one sha256 pass.
	warm "$img"
	t0=$(now)
	dd if="$img" of="$LOOP" bs=4M oflag=direct conv=fsync status=none
	t1=$(now)
	dd_s=$(diff_s "$t0" "$t1")
	warm "$img"
	t0=$(now)
	openssl dgst -sha256 "$img" >/dev/null
	t1=$(now)
	sha_s=$(diff_s "$t0" "$t1")
	limit=$(maxf "$dd_s" "$sha_s")
	printf '%-6s %-40s %8s %8s %9s %9s %9s\n' "${mib}M" "dd bs=4M oflag=direct conv=fsync" "$dd_s" - "$(ratio "$dd_s" "$limit")" - -
	printf '%-6s %-40s %8s %8s %9s %9s %9s\n' "${mib}M" "openssl dgst -sha256" "$sha_s" - "$(ratio "$sha_s" "$limit")" - -

	if [ $first = 1 ]; then
		for kind in raw zstd; do
			b="$DIR/b.otab"; goal=1.5; what="otagw bundle write, zstd bundle"
			[ $kind = zstd ] || { b="$DIR/raw.otab"; goal=1.3; what="otagw bundle write, uncompressed bundle"; }
			# Fill the slot with other bytes first, so the result means something.
			dd if=/dev/zero of="$LOOP" bs=4M count="$((mib / 4))" oflag=direct conv=fsync status=none
			warm "$b"
			/usr/bin/time -f "%e %U %S %M" -o "$DIR/install.time" "$DIR/otagw" bundle write "$b" --slot-device "$LOOP" \
				--keyring "$DIR/ring" --compatible bench-gw >/dev/null 2>"$DIR/install.err" || { cat "$DIR/install.err" >&2; exit 1; }
			cmp -n "$((mib * 1048576))" "$img" "$LOOP" || { echo "bench-rootfs: slot differs from the image ($kind)" >&2; exit 1; }
			w=$(tfield "$DIR/install.time" 1); c=$(cpu "$DIR/install.time")
			printf '%-6s %-40s %8s %8s %9s %9s %9s\n' "${mib}M" "$what" "$w" "$c" \
				"$(ratio "$w" "$limit")$(above "$(ratio "$w" "$limit")" $goal)" "$(ratio "$c" "$limit")" "$(($(tfield "$DIR/install.time" 4) / 1024)) MiB"
		done
		rm -f "$DIR/raw.otab"
	fi

	# The install through the daemon (otagw install over its API): its time
	# and the daemon's peak RSS (VmHWM), which includes its API server,
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
	DPID=$!
	i=0
	until "$DIR/otagw" status --socket "$DIR/otagw.sock" >/dev/null 2>&1; do
		i=$((i + 1)); [ $i -lt 200 ] || { cat "$DIR/daemon.log" >&2; exit 1; }
		sleep 0.05
	done
	idle_kib=$(awk '/^VmHWM/ { print $2 }' /proc/$DPID/status)
	idle_file=$(awk '/^RssFile/ { print $2 }' /proc/$DPID/status)
	warm "$DIR/b.otab"
	# VmHWM has no split; a sampler keeps the largest anonymous RSS (heap,
	# stacks, runtime) seen every 0.1 s, beside the file-backed pages (the
	# binary's code and read-only data) at the end.
	rm -f "$DIR/anon.max.stop"
	sample_anon "$DPID" "$DIR/anon.max" &
	SPID=$!
	t0=$(now)
	"$DIR/otagw" install --socket "$DIR/otagw.sock" "$DIR/b.otab" >/dev/null 2>"$DIR/install.err" || { cat "$DIR/install.err" "$DIR/daemon.log" >&2; exit 1; }
	t1=$(now)
	dinst_s=$(diff_s "$t0" "$t1")
	daemon_kib=$(awk '/^VmHWM/ { print $2 }' /proc/$DPID/status)
	file_kib=$(awk '/^RssFile/ { print $2 }' /proc/$DPID/status)
	touch "$DIR/anon.max.stop"
	wait $SPID
	anon_kib=$(cat "$DIR/anon.max")
	dcpu=$(awk '{ printf "%.2f", ($14 + $15) / 100 }' /proc/$DPID/stat)
	kill -TERM $DPID
	wait $DPID || true
	DPID=""
	cmp -n "$((mib * 1048576))" "$img" "$LOOP" || { echo "bench-rootfs: slot differs from the image (daemon)" >&2; exit 1; }
	losetup -d "$LOOP"
	LOOP=""
	rm -f "$DIR/slot.$mib"
	printf '%-6s %-40s %8s %8s %9s %9s %9s\n' "${mib}M" "otagw install via the daemon" "$dinst_s" "$dcpu" \
		"$(ratio "$dinst_s" "$limit")" "$(ratio "$dcpu" "$limit")" "$((daemon_kib / 1024)) MiB$(above "$daemon_kib" 14336)"
	printf '%-6s %-40s %8s %8s %9s %9s %9s\n' "${mib}M" "  of which anonymous (peak, sampled)" "" "" "" "" "$(mib1 "$anon_kib") MiB"
	printf '%-6s %-40s %8s %8s %9s %9s %9s\n' "${mib}M" "  of which the binary's pages (at end)" "" "" "" "" "$(mib1 "$file_kib") MiB"
	printf '%-6s %-40s %8s %8s %9s %9s %9s\n' "${mib}M" "  (the daemon idle, before the install)" "" "" "" "" "$((idle_kib / 1024)) MiB"
	printf '%-6s %-40s %8s %8s %9s %9s %9s\n' "${mib}M" "  of which the binary's pages (idle)" "" "" "" "" "$(mib1 "$idle_file") MiB"
	if [ $first = 1 ]; then
		printf '%-6s %-40s %8s %8s %9s %9s %9s\n' "${mib}M" "otagw bundle create (zstd, signed)" "$(tfield "$DIR/create.time" 1)" \
			"$(cpu "$DIR/create.time")" - - "$(($(tfield "$DIR/create.time" 4) / 1024)) MiB"
		printf '%-6s %-40s %s\n' "${mib}M" "  bundle size / image size" "$bsize / $((mib * 1048576)) = $(ratio "$bsize" "$((mib * 1048576))")"
	fi
	rm -f "$img" "$DIR/b.otab"
	first=0
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
