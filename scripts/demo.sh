#!/bin/sh
# `make demo`: otagw's main job on a built-in simulated gateway.
#
# Lays out ./demo (file-backed A and B slots, a U-Boot environment with its
# fw_env.config, a kernel command line, the demo config), starts the daemon
# in the foreground with readable logs, and drives it from a second process
# the way an operator would. Ctrl-C stops it cleanly. With DEMO_STAY=0 (or
# no terminal) it stops by itself once the steps are done.
set -eu
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
ROOT=$(pwd)
D="$ROOT/demo"
OTAGW="$ROOT/bin/otagw"

say() { printf '\n\033[1;34m== %s\033[0m\n' "$*" >&2; }

say "building bin/otagw"
make -s build

rm -rf "$D"
mkdir -p "$D/slots" "$D/state" "$D/run" "$D/boot"
say "laying out the simulated gateway in ./demo"
truncate -s 64M "$D/slots/rootfs-A.img" "$D/slots/rootfs-B.img"
echo "root=/dev/mmcblk0p2 rauc.slot=A rootwait" >"$D/boot/cmdline"

cat >"$D/otagw.yaml" <<YAML
# Demo config: everything lives under ./demo.
daemon:
  socket: $D/run/otagw.sock
  state_dir: $D/state
  read_group: "0"
  admin_group: "0"
  log_level: info
YAML
"$OTAGW" config validate "$D/otagw.yaml" >&2

steps() {
	i=0
	while [ ! -S "$D/run/otagw.sock" ]; do
		i=$((i + 1)); [ $i -lt 100 ] || { echo "daemon did not come up" >&2; return 1; }
		sleep 0.1
	done
	export OTAGW_SOCKET="$D/run/otagw.sock"
	say "otagw status (from a second process)"
	"$OTAGW" status
	say "otagw status --json"
	"$OTAGW" status --json | head -20
	say "otagw reload (config re-read; an invalid file would be rejected and the old one kept)"
	"$OTAGW" reload
}

say "starting: otagw daemon --config demo/otagw.yaml (Ctrl-C stops it)"
"$OTAGW" daemon --config "$D/otagw.yaml" --log-format console &
DPID=$!
trap 'kill -TERM $DPID 2>/dev/null; wait $DPID; exit 0' INT TERM
if steps; then
	if [ "${DEMO_STAY:-}" = 0 ] || [ ! -t 0 ]; then
		say "demo done; stopping the daemon"
		kill -TERM $DPID
	else
		say "demo done; the daemon keeps running. Try: OTAGW_SOCKET=$D/run/otagw.sock $OTAGW status   (Ctrl-C to stop)"
	fi
else
	kill -TERM $DPID
	wait $DPID || true
	exit 1
fi
wait $DPID
