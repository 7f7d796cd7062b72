#!/bin/sh
# Times 1,000 U-Boot environment updates on a file (redundant, 2 x 16 KiB,
# each update a full atomic write of the inactive copy followed by fsync):
#   1. otagw, in process: go test -bench BenchmarkUpdate -benchtime=1000x
#   2. otagw, one process per update: `otagw env set` in a shell loop
#   3. fw_setenv (libubootenv), one process per update, same loop, same file
# and, as the physical limit in the same run, 1,000 16 KiB writes each
# followed by a data sync (dd oflag=dsync) in the same directory.
# Usage: scripts/bench-abboot.sh [N]   (BENCH_DIR picks the disk, default /var/tmp)
set -eu
N=${1:-1000}
cd "$(dirname "$0")/.."
command -v fw_setenv >/dev/null || { echo "bench-abboot: fw_setenv missing (scripts/test-deps.sh)" >&2; exit 1; }
command -v mkenvimage >/dev/null || { echo "bench-abboot: mkenvimage missing (scripts/test-deps.sh)" >&2; exit 1; }
DIR=$(mktemp -d -p "${BENCH_DIR:-/var/tmp}" otagw-bench.XXXXXX)
trap 'rm -rf "$DIR"' EXIT

now() { date +%s.%N; }
per() { awk -v t="$1" -v n="$N" 'BEGIN { printf "%.3f", t * 1000 / n }'; }
diff_s() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

go build -o "$DIR/otagw" ./cmd/otagw

printf 'BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\nn=0\n' >"$DIR/in.txt"
mkenvimage -r -s 0x4000 -o "$DIR/copy.bin" "$DIR/in.txt"
fresh() { cat "$DIR/copy.bin" "$DIR/copy.bin" >"$DIR/env.img"; sync "$DIR/env.img"; }
printf '%s 0x0 0x4000\n%s 0x4000 0x4000\n' "$DIR/env.img" "$DIR/env.img" >"$DIR/fw_env.config"

# Physical limit: N x (16 KiB write + data sync).
t0=$(now)
dd if=/dev/zero of="$DIR/dsync.bin" bs=16k count="$N" oflag=dsync conv=notrunc status=none
t1=$(now)
limit=$(diff_s "$t0" "$t1")

# otagw in process.
gobench=$(TMPDIR="$DIR" go test -run '^$' -bench '^BenchmarkUpdate$' -benchtime "${N}x" ./abboot/ubootenv | awk '/^BenchmarkUpdate/ { print $3 }')
inproc=$(awk -v ns="$gobench" -v n="$N" 'BEGIN { printf "%.3f", ns * n / 1e9 }')

# otagw, one process per update.
fresh
t0=$(now)
i=1
while [ "$i" -le "$N" ]; do
	"$DIR/otagw" env set -c "$DIR/fw_env.config" --lock "$DIR/lock" n "$i"
	i=$((i + 1))
done
t1=$(now)
otagw=$(diff_s "$t0" "$t1")
[ "$(fw_printenv -c "$DIR/fw_env.config" -n n)" = "$N" ] || { echo "bench-abboot: otagw loop lost updates" >&2; exit 1; }

# fw_setenv, one process per update.
fresh
t0=$(now)
i=1
while [ "$i" -le "$N" ]; do
	fw_setenv -c "$DIR/fw_env.config" n "$i"
	i=$((i + 1))
done
t1=$(now)
fwset=$(diff_s "$t0" "$t1")
[ "$(fw_printenv -c "$DIR/fw_env.config" -n n)" = "$N" ] || { echo "bench-abboot: fw_setenv loop lost updates" >&2; exit 1; }

ratio() { awk -v a="$1" -v b="$limit" 'BEGIN { printf "%.2f", a / b }'; }
echo "abboot env updates: N=$N, redundant 2 x 16 KiB file env on $(df -P "$DIR" | awk 'NR==2 { print $1 }'), $(nproc) CPUs"
printf '%-44s %9s %12s %10s\n' "what" "total s" "ms/update" "x limit"
printf '%-44s %9s %12s %10s\n' "limit: dd bs=16k oflag=dsync (write+sync)" "$limit" "$(per "$limit")" "1.00"
printf '%-44s %9s %12s %10s\n' "otagw in process (Store.Update)" "$inproc" "$(per "$inproc")" "$(ratio "$inproc")"
printf '%-44s %9s %12s %10s\n' "otagw env set (process per update)" "$otagw" "$(per "$otagw")" "$(ratio "$otagw")"
printf '%-44s %9s %12s %10s\n' "fw_setenv (process per update)" "$fwset" "$(per "$fwset")" "$(ratio "$fwset")"
