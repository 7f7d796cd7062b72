#!/bin/sh
# STM32 over CAN (AN3154): payload throughput of otagw's client flashing the
# simulator over the paced in-memory CAN bus, as a fraction of the
# frame-level limit at each bit rate (stuffing included), measured in the
# same run. Prints the markdown table recorded in docs/benchmarks-downstream.md.
#
#   scripts/bench-can.sh            # needs go; about a minute
set -eu
cd "$(dirname "$0")/.."
go run ./scripts/bench-can -kib 32 -bitrates 125000,500000,1000000
