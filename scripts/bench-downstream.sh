#!/bin/bash
# Wire cost of flashing a 128 KiB image into a simulated STM32 (otagw's
# STM32 client vs Debian's stm32flash on the same simulator, which counts
# the bytes in both directions and the round trips). Prints a markdown
# table; docs/benchmarks-downstream.md records a run.
#
#   scripts/bench-downstream.sh            # needs go, stm32flash
set -euo pipefail
cd "$(dirname "$0")/.."
command -v stm32flash >/dev/null || { echo "bench-downstream: stm32flash missing (scripts/test-deps.sh installs it)" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/otagw" ./cmd/otagw
otagw="$work/otagw"
size=$((128 * 1024))
head -c $size /dev/urandom > "$work/fw.bin"
"$otagw" keygen --out "$work/keys" >/dev/null

# run NAME CHIP CMD...: serve a fresh simulator, run CMD with @PTY@ replaced
# by its path, print "name host dev rt seconds".
run() {
	local name=$1 chip=$2; shift 2
	"$otagw" sim stm32 --chip "$chip" --stats "$work/$name.json" >"$work/$name.path" 2>"$work/$name.err" &
	local pid=$!
	for _ in $(seq 50); do [ -s "$work/$name.path" ] && break; sleep 0.1; done
	local pty; pty=$(cat "$work/$name.path")
	local args=() a
	for a in "$@"; do args+=("${a//@PTY@/$pty}"); done
	local t0 t1
	t0=$(date +%s.%N)
	"${args[@]}" >"$work/$name.out" 2>&1 || { echo "bench-downstream: $name failed:" >&2; cat "$work/$name.out" >&2; exit 1; }
	t1=$(date +%s.%N)
	kill -TERM $pid; wait $pid || true
	local h d r
	h=$(awk -F'[:,]' '/"host_bytes"/{gsub(/ /,"",$2);print $2}' "$work/$name.json")
	d=$(awk -F'[:,]' '/"device_bytes"/{gsub(/ /,"",$2);print $2}' "$work/$name.json")
	r=$(awk -F'[:,]' '/"round_trips"/{gsub(/ /,"",$2);print $2}' "$work/$name.json")
	echo "$name $h $d $r $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')"
}

pkg() { # pkg CHIP FAMILY OUT
	"$otagw" mcu package create --key "$work/keys/signing.key" --target "$2" --product-id "$1" --version 1.0.0 \
		--address 0x08000000 "$work/fw.bin" -o "$3" >/dev/null
}
pkg 0x410 F1 "$work/f1.mcu"
pkg 0x460 G0 "$work/g0.mcu"

flash() { echo "$otagw" mcu flash --port @PTY@ --keyring "$work/keys" --parity none --verify "$1" "$2"; }
results=$(
	run "otagw-F1-readback" 0x410 $(flash readback "$work/f1.mcu")
	run "stm32flash-F1-w-v" 0x410 stm32flash -m 8n1 -b 115200 -w "$work/fw.bin" -v @PTY@
	run "otagw-G0-crc" 0x460 $(flash auto "$work/g0.mcu")
	run "stm32flash-G0-w-v" 0x460 stm32flash -m 8n1 -b 115200 -w "$work/fw.bin" -v @PTY@
	run "stm32flash-F1-w" 0x410 stm32flash -m 8n1 -b 115200 -w "$work/fw.bin" @PTY@
)
limit=$(awk -v s=$size 'BEGIN{printf "%.3f", s*11/115200}')
echo "image: $size bytes; wire limit at 115200 baud 8E1 (11 bits/byte, payload only): ${limit} s"
echo
echo "| run | host→MCU B | MCU→host B | wire B per payload B | round trips per KiB | implied s at 115200 8E1 | × wire limit | wall s on pty |"
echo "|---|---|---|---|---|---|---|---|"
echo "$results" | while read -r name h d r wall; do
	awk -v n="$name" -v h="$h" -v d="$d" -v r="$r" -v s="$size" -v lim="$limit" -v w="$wall" 'BEGIN{
		t=(h+d)*11/115200;
		printf "| %s | %d | %d | %.4f | %.2f | %.2f | %.3f | %.2f |\n", n, h, d, (h+d)/s, r/(s/1024), t, t/lim, w }'
done
