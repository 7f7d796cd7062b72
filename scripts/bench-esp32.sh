#!/bin/bash
# Wire cost of flashing a 200 000-byte application into the simulated
# ESP32 ROM loader (otagw sim esp32 counts the bytes in both directions
# and the round trips): a compressible and a random image, compressed
# (FLASH_DEFL_*) and plain (FLASH_DATA). Prints a markdown table;
# docs/benchmarks-esp32.md records a run.
#
# esptool-js 0.7.0 (npm, its default stub path, 16 KiB compressed blocks)
# flashes the same images into the same simulator in the same run.
#
#   scripts/bench-esp32.sh            # needs go, node, tests/esptooljs (scripts/test-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -e tests/esptooljs/node_modules/esptool-js/package.json ] || { echo "bench-esp32: esptool-js missing (scripts/test-deps.sh installs it)" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/otagw" ./cmd/otagw
otagw="$work/otagw"
size=200000
"$otagw" keygen --out "$work/keys" >/dev/null
head -c $((size / 2)) /dev/urandom >"$work/text.bin"
{ yes "otagw esp32 benchmark: a line of firmware strings and tables" || true; } | head -c $((size / 2)) >>"$work/text.bin"
head -c $size /dev/urandom >"$work/random.bin"
for img in text random; do
	"$otagw" mcu package create --key "$work/keys/signing.key" --chip esp32 --version 1.0.0 \
		--region 0x10000="$work/$img.bin" -o "$work/$img.mcu" >/dev/null
done

# run NAME IMAGE FLAGS...: a fresh simulator, one otagw mcu flash, "name host dev rt seconds".
run() {
	local name=$1 img=$2; shift 2
	"$otagw" sim esp32 --chip esp32 --stats "$work/$name.json" >"$work/$name.path" 2>"$work/$name.err" &
	local pid=$!
	for _ in $(seq 50); do [ -s "$work/$name.path" ] && break; sleep 0.1; done
	local pty; pty=$(cat "$work/$name.path")
	local t0 t1
	t0=$(date +%s.%N)
	if [ "${1:-}" = esptool-js ]; then
		set -- node tests/esptooljs/flash.mjs "$pty" "$work/$img.bin" 0x10000 -
	else
		set -- "$otagw" mcu flash --port "$pty" --keyring "$work/keys" "$@" "$work/$img.mcu"
	fi
	"$@" >"$work/$name.out" 2>&1 ||
		{ echo "bench-esp32: $name failed:" >&2; cat "$work/$name.out" >&2; exit 1; }
	t1=$(date +%s.%N)
	kill -TERM $pid; wait $pid || true
	local h d r
	h=$(awk -F'[:,]' '/"host_bytes"/{gsub(/ /,"",$2);print $2}' "$work/$name.json")
	d=$(awk -F'[:,]' '/"device_bytes"/{gsub(/ /,"",$2);print $2}' "$work/$name.json")
	r=$(awk -F'[:,]' '/"round_trips"/{gsub(/ /,"",$2);print $2}' "$work/$name.json")
	echo "$name $h $d $r $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')"
}
results=$(
	run otagw-deflate-text text
	run otagw-deflate-random random
	run otagw-plain-text text --no-compress
	run otagw-plain-random random --no-compress
	run otagw-deflate-text-16k text --esp-block-size 16384
	run otagw-deflate-random-16k random --esp-block-size 16384
	run esptool-js-text text esptool-js
	run esptool-js-random random esptool-js
)
echo "image: $size bytes at 0x10000 (text: half random, half repeated text; random: all random); ESP32 ROM, 1 KiB blocks"
echo "whole session counted: SYNC, detection, SPI attach, MD5 before and after, FLASH_END"
echo
echo "| run | host→chip B | chip→host B | wire B per payload B | round trips per KiB | implied s at 115200 8N1 | wall s on pty |"
echo "|---|---|---|---|---|---|---|"
echo "$results" | while read -r name h d r wall; do
	awk -v n="$name" -v h="$h" -v d="$d" -v r="$r" -v s="$size" -v w="$wall" 'BEGIN{
		printf "| %s | %d | %d | %.4f | %.2f | %.2f | %.2f |\n", n, h, d, (h+d)/s, r/(s/1024), (h+d)*10/115200, w }'
done
