#!/bin/sh
# Runs inside the container (otagw-nspawn-check.service, after
# otagw.service) under a real systemd PID 1. Each check prints
# "CHECK <name> ok|FAIL <detail>"; the host test reads /results.
exec >/results 2>&1
check() { # name, then a command whose success means ok
	name=$1; shift
	if out=$("$@" 2>&1); then echo "CHECK $name ok"; else echo "CHECK $name FAIL $(echo "$out" | tr '\n' ' ')"; fi
}
prop() { systemctl show otagw -p "$1" --value; }

check enabled-by-package systemctl is-enabled otagw
check groups-created sh -c 'getent group otagw && getent group otagw-admin'
check active systemctl is-active otagw
check type-notify test "$(prop Type)" = notify
check status-text sh -c 'systemctl show otagw -p StatusText --value | grep -q "idle: ready"'
check cli-status otagw status --json
# The booted slot is committed (nothing pending): otagw starts the target.
i=0
while ! systemctl is-active -q otagw-committed.target && [ $i -lt 20 ]; do sleep 0.5; i=$((i + 1)); done
check committed-target-started systemctl is-active otagw-committed.target
check health-over-dbus sh -c 'otagw health --json | grep -q "\"detail\": \"active\""'
# The daemon writes to journald with the native protocol: its zap fields
# are journal fields (event -> OTAGW_EVENT, state -> OTAGW_STATE, ...).
# JOURNAL_MATCH comes from the host test (nspawnJournalMatch).
check mark-good otagw mark-good
check journal-fields sh -c "journalctl -q --no-pager -o json _SYSTEMD_UNIT=otagw.service _TRANSPORT=journal SYSLOG_IDENTIFIER=otagw $JOURNAL_MATCH | grep -q '\"PRIORITY\":\"6\"'"
check reload-good systemctl reload otagw
echo "daemon: {sockett: x}" >>/etc/otagw/otagw.yaml
check reload-bad-fails sh -c '! systemctl reload otagw'
check still-active-after-bad-reload systemctl is-active otagw
sed -i '$d' /etc/otagw/otagw.yaml
# Remote configuration: a whole new file through the API, written by the
# sandboxed service itself (ProtectSystem=strict with /etc/otagw writable).
sed 's/^daemon:$/daemon:\n  log_level: debug/' /etc/otagw/otagw.yaml >/tmp/new.yaml
check config-apply otagw config apply /tmp/new.yaml
check config-applied sh -c 'otagw status --json | grep -q "\"log_level\": \"debug\""'
# A hung daemon: its health loop stops, WATCHDOG=1 stops, systemd kills
# and restarts it (WatchdogSec=4s in the test drop-in).
pid=$(prop MainPID)
kill -STOP "$pid"
i=0
while [ "$(prop NRestarts)" = 0 ] && [ $i -lt 30 ]; do sleep 1; i=$((i + 1)); done
sleep 2
check watchdog-restart test "$(prop NRestarts)" -ge 1
check new-main-pid test "$(prop MainPID)" != "$pid"
check active-again systemctl is-active otagw
check failed-with-watchdog sh -c 'journalctl -u otagw --no-pager | grep -q "Failed with result .watchdog."'
check no-unhealthy-at-start sh -c '! journalctl -u otagw --no-pager -o verbose | grep -q "api socket.*no such file"'
# A release through the whole flow under systemd: installed into slot B,
# booted by the simulated boot loader (boot.cmd on the file environment),
# assessed and committed by the restarted daemon; the journal finds the
# commit by its fields (JOURNAL_COMMIT from the host test).
check install-2.0.0 otagw install /var/lib/otagw-test/bundle-2.0.0.otagw
check boot-into-B sh -c 'otagw sim boot --config /etc/otagw/otagw.yaml && grep -q "rauc.slot=B" /var/lib/otagw-test/cmdline'
systemctl restart otagw
i=0
while ! otagw status --json | grep -q '"committed": "2.0.0"' && [ $i -lt 60 ]; do sleep 0.5; i=$((i + 1)); done
check committed-2.0.0 sh -c 'otagw status --json | grep -q "\"committed\": \"2.0.0\""'
check journal-commit sh -c "journalctl -q --no-pager -o json _SYSTEMD_UNIT=otagw.service _TRANSPORT=journal $JOURNAL_COMMIT | grep -q ."
systemctl stop otagw
check clean-stop sh -c 'test "$(systemctl show otagw -p Result --value)" = success'
journalctl -u otagw --no-pager | tail -40
echo "the daemon's first journal entries, all fields:"
journalctl _SYSTEMD_UNIT=otagw.service --no-pager -o verbose | head -60
echo "RESULTS DONE"
systemctl poweroff
