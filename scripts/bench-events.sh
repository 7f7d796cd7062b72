#!/bin/sh
# An install with and without a GET /v1/events subscriber that never reads
# (issue 12): the end-to-end test TestStalledSubscriberDropped installs a
# 48 MiB bundle of 16 KiB chunks (3072 progress events) three times into
# the same daemon:
#   1. without a subscriber,
#   2. with a subscriber that never reads (it is dropped with "lagged")
#      and one that reads every event,
#   3. without a subscriber again,
# and reads the daemon's VmHWM (/proc/PID/status) after each. The physical
# limit in the same run: the same 48 MiB written to a file on the same
# disk and synced. The test asserts the drop; this script reports times.
# Usage: scripts/bench-events.sh [RUNS]   (default 3; writes nothing, prints Markdown rows)
set -eu
cd "$(dirname "$0")/.."
RUNS=${1:-3}
[ "$(id -u)" = 0 ] || { echo "bench-events: run as root, like the tests" >&2; exit 1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
field() { printf '%s\n' "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2 }'; }

echo "| run | limit s | install s (no sub) | install s (stalled sub) | install s (no sub, again) | stalled / no sub | no sub / limit | VmHWM KiB after 1 / 2 / 3 | events the stalled sub got |"
echo "|---|---|---|---|---|---|---|---|---|"
i=1
while [ "$i" -le "$RUNS" ]; do
	out=$(go test -count=1 -run '^TestStalledSubscriberDropped$' -v ./tests/ 2>&1) || {
		printf '%s\n' "$out" | tail -40 >&2
		echo "bench-events: TestStalledSubscriberDropped failed" >&2
		exit 1
	}
	line=$(printf '%s\n' "$out" | sed -n 's/.*bench-events: //p' | head -1)
	[ -n "$line" ] || { echo "bench-events: no bench-events line in the test output" >&2; exit 1; }
	limit=$(field "$line" limit_s)
	plain=$(field "$line" plain_s)
	stalled=$(field "$line" stalled_s)
	again=$(field "$line" again_s)
	base=$(awk -v a="$plain" -v b="$again" 'BEGIN { printf "%.3f", (a + b) / 2 }')
	echo "| $i | $limit | $plain | $stalled | $again | $(ratio "$stalled" "$base") | $(ratio "$base" "$limit") | $(field "$line" hwm_plain_kib) / $(field "$line" hwm_stalled_kib) / $(field "$line" hwm_again_kib) | $(field "$line" stalled_events) of $(field "$line" chunks) |"
	i=$((i + 1))
done
