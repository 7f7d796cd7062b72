#!/bin/sh
# `make demo`: otagw's main job on a built-in simulated gateway.
#
# ./demo holds the gateway: file-backed A and B root filesystem slots, a
# redundant U-Boot environment (two copies in one file) with its
# fw_env.config, the kernel command line and uptime that the simulated boot
# loader (`otagw sim boot`: boot.cmd on a Go model of U-Boot) writes, keys,
# a local update server (`otagw sim server`) and the demo config.
#
# The daemon's logs go to this terminal; the steps run as a second process,
# the way an operator would. Ctrl-C stops it cleanly. With DEMO_STAY=0 (or
# no terminal) it stops by itself once the steps are done.
set -eu
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
ROOT=$(pwd)
D="$ROOT/demo"
OTAGW="$ROOT/bin/otagw"

say() { printf '\n\033[1;34m== %s\033[0m\n' "$*" >&2; }
run() { printf '\033[1m$ %s\033[0m\n' "$*" >&2; "$@"; }
# refused runs a step that must fail (a refused downgrade): the demo stops
# if it succeeds.
refused() {
	printf '\033[1m$ %s\033[0m   (must be refused)\n' "$*" >&2
	if "$@"; then echo "demo: that step should have been refused" >&2; exit 1; fi
}

say "building bin/otagw"
make -s build

# Stop what a previous, interrupted demo left running in ./demo.
for f in "$D"/run/*.pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
rm -rf "$D"
mkdir -p "$D/slots" "$D/state" "$D/run" "$D/boot" "$D/www" "$D/images"
say "laying out the simulated gateway in ./demo"
truncate -s 64M "$D/slots/rootfs-A.img" "$D/slots/rootfs-B.img"
# Release 1.0.0 is what the factory put in slot A.
head -c 8M /dev/urandom >"$D/images/rootfs-1.0.0.img"
dd if="$D/images/rootfs-1.0.0.img" of="$D/slots/rootfs-A.img" conv=notrunc status=none
# Release 2.0.0: half of it shared with 1.0.0, half new.
{ head -c 4M "$D/images/rootfs-1.0.0.img"; head -c 4M /dev/urandom; } >"$D/images/rootfs-2.0.0.img"

# A redundant U-Boot environment: two 16 KiB copies in one file.
truncate -s 32K "$D/boot/uboot.env"
cat >"$D/boot/fw_env.config" <<CFG
# device            offset   env size
$D/boot/uboot.env   0x0000   0x4000
$D/boot/uboot.env   0x4000   0x4000
CFG
cat >"$D/boot/default-env.txt" <<ENV
BOOT_ORDER=A B
BOOT_A_LEFT=3
BOOT_B_LEFT=3
ENV

say "the MCU fleet, simulated ROM bootloaders: two STM32F103 and two ESP32s on pseudo-terminals (one STM32 with a noisy line), two STM32F407 on one CAN bus behind an slcan adapter, an STM32F407 on SPI"
"$OTAGW" sim stm32 --chip 0x410 >"$D/run/mcu1.tty" 2>/dev/null &
echo $! >"$D/run/mcu1.pid"
"$OTAGW" sim stm32 --chip 0x410 --fault nack=0.01 --seed 3 >"$D/run/mcu2.tty" 2>/dev/null &
echo $! >"$D/run/mcu2.pid"
"$OTAGW" sim esp32 --chip esp32s3 >"$D/run/mcu3.tty" 2>/dev/null &
echo $! >"$D/run/mcu3.pid"
"$OTAGW" sim esp32 --chip esp32 >"$D/run/mcu4.tty" 2>/dev/null &
echo $! >"$D/run/mcu4.pid"
# The SPI face serves AN4286 on a Unix socket: this host has no spidev, so the
# spi bus below names it as device: sim:PATH (the simulator link, tests and demo only).
"$OTAGW" sim stm32 --chip 0x413 --spi "$D/run/stm32-spi.sock" --erase-time 1ms >"$D/run/mcu5.tty" 2>/dev/null &
echo $! >"$D/run/mcu5.pid"
# Two parts on one CAN bus behind an slcan adapter on a pty; their simulated
# BOOT0/NRST lines are served on a socket (reset: sim:SOCKET:PART below;
# a gateway wires gpio:CHIP:BOOT0LINE:NRSTLINE per device).
"$OTAGW" sim stm32 --chip 0x413 --slcan --parts 2 --reset-socket "$D/run/can-lines.sock" >"$D/run/mcu6.tty" 2>/dev/null &
echo $! >"$D/run/mcu6.pid"
i=0; while [ ! -s "$D/run/mcu1.tty" ] || [ ! -s "$D/run/mcu2.tty" ] || [ ! -s "$D/run/mcu3.tty" ] || [ ! -s "$D/run/mcu4.tty" ] || [ ! -s "$D/run/mcu5.tty" ] || [ ! -s "$D/run/mcu6.tty" ]; do i=$((i + 1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done
TTY1=$(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^\/dev\//) print $i}' "$D/run/mcu1.tty" | head -1)
TTY2=$(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^\/dev\//) print $i}' "$D/run/mcu2.tty" | head -1)
TTY3=$(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^\/dev\//) print $i}' "$D/run/mcu3.tty" | head -1)
TTY4=$(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^\/dev\//) print $i}' "$D/run/mcu4.tty" | head -1)
SPISOCK=$(head -1 "$D/run/mcu5.tty")
TTY6=$(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^\/dev\//) print $i}' "$D/run/mcu6.tty" | head -1)
echo "STM32F103 (0x410) on $TTY1 and $TTY2, ESP32-S3 on $TTY3, ESP32 on $TTY4, STM32F407 (0x413) on SPI at $SPISOCK, two STM32F407 on CAN (slcan) at $TTY6" >&2

# The local update server: bundles, MCU packages and the update channel.
"$OTAGW" sim server --dir "$D/www" >"$D/run/server.url" &
echo $! >"$D/run/server.pid"
i=0; while [ ! -s "$D/run/server.url" ]; do i=$((i + 1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done
URL=$(sed "s,/$,," "$D/run/server.url")
echo "update server: $URL" >&2

cat >"$D/otagw.yaml" <<YAML
# Demo config: everything lives under ./demo.
daemon:
  socket: $D/run/otagw.sock
  state_dir: $D/state
  read_group: "0"
  admin_group: "0"
  # The simulated gateway's "reboot" only records that it was asked for.
  reboot_command: [/bin/sh, -c, 'echo "\$OTAGW_REBOOT_REASON" > $D/run/reboot-requested']
  uptime_file: $D/boot/uptime
boot:
  backend: uboot
  fw_env_config: $D/boot/fw_env.config
  lock_file: $D/run/fw_env.lock
  cmdline: $D/boot/cmdline
rootfs:
  slots:
    - {name: rootfs.0, class: rootfs, device: $D/slots/rootfs-A.img, bootname: A}
    - {name: rootfs.1, class: rootfs, device: $D/slots/rootfs-B.img, bootname: B}
update:
  keyring: $D/keys
  compatible: otagw-demo-gateway
watchdog:
  enabled: false      # no /dev/watchdog on a development machine
health:
  checks:
    - {name: slot-readable, file: $D/slots/rootfs-B.img}
    - {name: settled, uptime: 1s, required: false}
assessment:
  deadline: 60s
  retry_interval: 2s
  committed_unit: ""
channel:
  # The update channel the daemon polls (nothing is published there yet;
  # the last step publishes release 3.0.0). A gateway uses https://; the
  # index is signed either way.
  url: $URL/stable/index.json
  allow_http: true
  interval: 1h
maintenance:
  # Shown in otagw status; installs and flashing are allowed at any time here.
  windows:
    - {name: nightly, start: "0 2 * * *", duration: 2h}
downstream:
  buses:
    # Pseudo-terminals drop parity: the simulated STM32 lines run 8N1.
    - {name: uart1, transport: uart, port: $TTY1, parity: none, reset: manual}
    - {name: uart2, transport: uart, port: $TTY2, parity: none, reset: manual}
    - {name: uart3, transport: uart, port: $TTY3, reset: manual}
    - {name: uart4, transport: uart, port: $TTY4, reset: manual}
    # On a gateway: device: /dev/spidev0.0 and reset: gpio:CHIP:BOOT0LINE:NRSTLINE.
    - {name: spi0, transport: spi, device: "sim:$SPISOCK", mode: 0, speed_hz: 8000000, bits_per_word: 8, reset: manual}
    # On a gateway: interface: can0 (SocketCAN), or port: /dev/ttyACM0 for an slcan adapter.
    - {name: can1, transport: can, port: $TTY6, bitrate: 125000}
  devices:
    - {name: motor-ctl, bus: uart1, protocol: stm32-rom, family: F1, product_id: 0x410}
    - {name: fan-ctl, bus: uart2, protocol: stm32-rom, family: F1, product_id: 0x410}
    - {name: sensor-hub, bus: spi0, protocol: stm32-rom, family: F4, product_id: 0x413}
    - {name: radio, bus: uart3, protocol: esp32-rom, chip: esp32s3}
    - {name: gps, bus: uart4, protocol: esp32-rom, chip: esp32}
    - {name: door-front, bus: can1, protocol: stm32-rom, family: F4, product_id: 0x413, reset: "sim:$D/run/can-lines.sock:0"}
    - {name: door-rear, bus: can1, protocol: stm32-rom, family: F4, product_id: 0x413, reset: "sim:$D/run/can-lines.sock:1"}
  backoff: 100ms
  esp32: {baud: 921600}
YAML
run "$OTAGW" config validate "$D/otagw.yaml" >&2
run "$OTAGW" keygen --out "$D/keys" >&2
run "$OTAGW" env set -c "$D/boot/fw_env.config" --lock "$D/run/fw_env.lock" -f "$D/boot/default-env.txt" otagw_demo 1 >&2

say "power on: U-Boot runs boot.cmd on the environment"
run "$OTAGW" sim boot --config "$D/otagw.yaml" >&2

say "signed bundles for release 2.0.0 (and the old 1.0.0), served by a local update server"
run "$OTAGW" bundle create --key "$D/keys/signing.key" --compatible otagw-demo-gateway --version 1.0.0 \
	rootfs="$D/images/rootfs-1.0.0.img" -o "$D/www/gw-1.0.0.otagw" >&2
run "$OTAGW" bundle create --key "$D/keys/signing.key" --compatible otagw-demo-gateway --version 2.0.0 \
	rootfs="$D/images/rootfs-2.0.0.img" -o "$D/www/gw-2.0.0.otagw" >&2

DPID=""
start_daemon() {
	say "starting: otagw daemon --config demo/otagw.yaml (logs below)"
	"$OTAGW" daemon --config "$D/otagw.yaml" --log-format console &
	DPID=$!
	echo $DPID >"$D/run/daemon.pid"
	i=0
	until "$OTAGW" status --socket "$D/run/otagw.sock" >/dev/null 2>&1; do
		i=$((i + 1)); [ $i -lt 100 ] || { echo "daemon did not come up" >&2; return 1; }
		sleep 0.1
	done
}
stop_daemon() {
	kill -TERM "$DPID" 2>/dev/null || true
	wait "$DPID" 2>/dev/null || true
}
cleanup() {
	stop_daemon
	for f in server mcu1 mcu2 mcu3 mcu4 mcu5 mcu6; do kill "$(cat "$D/run/$f.pid")" 2>/dev/null || true; done
}
trap 'cleanup; exit 0' INT TERM
# A failed step (set -e) must not leave the daemon and simulators running.
trap cleanup EXIT

export OTAGW_SOCKET="$D/run/otagw.sock"
start_daemon
say "otagw status (from a second process): slot A booted, release 1.0.0 running"
run "$OTAGW" status

say "install release 2.0.0 from the update server: every chunk verified before it is written"
run "$OTAGW" install "$URL/gw-2.0.0.otagw"
run "$OTAGW" status
say "the U-Boot environment now boots B first, with 3 tries (read as fw_printenv would)"
run "$OTAGW" env print -c "$D/boot/fw_env.config" --lock "$D/run/fw_env.lock" BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT

say "reboot into the new slot"
stop_daemon
run "$OTAGW" sim boot --config "$D/otagw.yaml" >&2
start_daemon
say "the daemon assesses the new release (health checks), then commits it"
i=0
until "$OTAGW" status --json | grep -q '"outcome": *"committed"'; do
	i=$((i + 1)); [ $i -lt 600 ] || { echo "demo: the new release was not committed" >&2; exit 1; }
	sleep 0.2
done
run "$OTAGW" status
run "$OTAGW" health

say "the old release is now a downgrade and is refused"
refused "$OTAGW" install "$URL/gw-1.0.0.otagw"

say "the floor has a second copy in the U-Boot environment, written with the boot switch and the commit"
run "$OTAGW" env print -c "$D/boot/fw_env.config" --lock "$D/run/fw_env.lock" otagw_anchor_min_version otagw_anchor_seq
say "lose the state file (or restore an old copy): the daemon says so, and the floor holds"
stop_daemon
rm -f "$D/state/state"
start_daemon
run "$OTAGW" status
refused "$OTAGW" install "$URL/gw-1.0.0.otagw"

say "MCU firmware: four signed packages, fanned out to seven devices over six buses (four UARTs, CAN, SPI) in parallel, one device at a time per bus"
head -c 48K /dev/urandom >"$D/images/motor-ctl.bin"
head -c 96K /dev/urandom >"$D/images/sensor-hub.bin"
run "$OTAGW" mcu package create --key "$D/keys/signing.key" --target F1 --product-id 0x410 --version 1.4.0 \
	--address 0x08000000 "$D/images/motor-ctl.bin" -o "$D/www/motor-ctl-1.4.0.otagwpkg" >&2
run "$OTAGW" mcu package create --key "$D/keys/signing.key" --target F4 --product-id 0x413 --version 2.0.1 \
	--address 0x08000000 "$D/images/sensor-hub.bin" -o "$D/www/sensor-hub-2.0.1.otagwpkg" >&2
head -c 64K /dev/urandom >"$D/images/radio.bin"
yes "radio firmware text" | head -c 64K >>"$D/images/radio.bin"
run "$OTAGW" mcu package create --key "$D/keys/signing.key" --chip esp32s3 --version 3.1.0 \
	--region 0x10000="$D/images/radio.bin" -o "$D/www/radio-3.1.0.otagwpkg" >&2
run "$OTAGW" mcu package create --key "$D/keys/signing.key" --chip esp32 --version 1.0.2 \
	--region 0x10000="$D/images/radio.bin" -o "$D/www/gps-1.0.2.otagwpkg" >&2
MCUPKGS="$D/www/motor-ctl-1.4.0.otagwpkg $D/www/sensor-hub-2.0.1.otagwpkg $D/www/radio-3.1.0.otagwpkg $D/www/gps-1.0.2.otagwpkg"
# shellcheck disable=SC2086 # four package paths
run "$OTAGW" mcu flash --all $MCUPKGS
say "again: the devices are current, nothing is flashed (the ESP32s' flash MD5 matches)"
# shellcheck disable=SC2086
run "$OTAGW" mcu flash --all $MCUPKGS
run "$OTAGW" mcu list

say "unattended: release 3.0.0 published on the signed update channel; the daemon fetches and installs it"
{ head -c 6M "$D/images/rootfs-2.0.0.img"; head -c 2M /dev/urandom; } >"$D/images/rootfs-3.0.0.img"
run "$OTAGW" bundle create --key "$D/keys/signing.key" --compatible otagw-demo-gateway --version 3.0.0 \
	rootfs="$D/images/rootfs-3.0.0.img" -o "$D/images/gw-3.0.0.otagw" >&2
run "$OTAGW" channel publish "$D/www" --key "$D/keys/signing.key" --compatible otagw-demo-gateway \
	--bundle "$D/images/gw-3.0.0.otagw" >&2
run "$OTAGW" channel poll
say "otagw watch follows the daemon's event stream until the release is installed"
run timeout 120 "$OTAGW" watch --types state --until installed
run "$OTAGW" status

if [ "${DEMO_STAY:-}" = 0 ] || [ ! -t 0 ]; then
	say "demo done; stopping"
	cleanup
	exit 0
fi
say "demo done; the daemon keeps running. Try: OTAGW_SOCKET=$D/run/otagw.sock bin/otagw status   (Ctrl-C stops it)"
wait "$DPID"
cleanup
