#!/bin/bash
# STM32 over SPI (AN4286) and the mixed MCU fleet, measured against the
# physical limit in the same run:
#  - BenchmarkSPIFlash: 64 KiB into a simulated G0 over the SPI fake paced
#    at the clock (1 MHz, 8 MHz) and unpaced: payload bits over wall time
#    as a fraction of the clock rate, bus bytes per payload byte, share of
#    the wall time the clock ran, ACK polls per KiB;
#  - BenchmarkMixedFleet: 2 STM32 on UART (115200 8E1), 2 STM32 on one CAN
#    bus (125 kbit/s), 1 STM32 on SPI (1 MHz), 2 ESP32 on UART (115200,
#    then 460800), every line paced at its bit rate: the fleet's total time
#    against each bus alone (best of three each).
# Prints markdown; docs/benchmarks-downstream.md records a run.
#
#   scripts/bench-spi.sh            # needs go
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test -count=1 -run '^$' -bench 'BenchmarkSPIFlash' -benchtime 1x ./downstream/stm32/ >"$out"
go test -count=1 -run '^$' -bench 'BenchmarkMixedFleet' -benchtime 1x ./downstream/fanout/ >>"$out"
# metric VALUE-UNIT pairs follow the ns/op column
metric() { awk -v b="$1" -v m="$2" '$1 ~ b { for (i = 3; i < NF; i++) if ($(i+1) == m) print $i }' "$out"; }
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end of the run"
echo
echo "| SPI clock | payload / clock rate | bus bytes per payload byte | clock running / wall | ACK polls per KiB | wall s (64 KiB) |"
echo "|---|---|---|---|---|---|"
for c in 1MHz 8MHz unpaced; do
	echo "| $c | $(metric "SPIFlash/$c" payload/clock) | $(metric "SPIFlash/$c" bus_B/payload_B) | $(metric "SPIFlash/$c" bus_time/wall) | $(metric "SPIFlash/$c" polls/KiB) | $(metric "SPIFlash/$c" wall_s) |"
done
echo
echo "| bus alone, s: uart1 (STM32) | uart2 (STM32) | can1 (2 STM32) | spi0 (STM32) | uart3 (ESP32) | uart4 (ESP32) | slowest bus s | fleet s | fleet / slowest (goal ≤ 1.1) |"
echo "|---|---|---|---|---|---|---|---|---|"
m() { metric MixedFleet "$1"; }
echo "| $(m uart1_s) | $(m uart2_s) | $(m can1_s) | $(m spi0_s) | $(m uart3_s) | $(m uart4_s) | $(m slowest_bus_s) | $(m fleet_s) | $(m fleet/slowest) |"
