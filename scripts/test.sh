#!/bin/sh
# The README's test command: `make test` runs this.
# 1. installs the Debian packages the tests need (only when missing),
# 2. checks gofmt and go vet,
# 3. runs every Go test (the end-to-end tests in tests/ run as root, as CI does),
# 4. runs the race detector over every package that starts goroutines, and
#    over the daemon end to end (OTAGW_E2E_RACE=1 builds tests/' otagw with -race),
# 5. runs every fuzz target briefly (a counted run each).
set -eu
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

sh scripts/test-deps.sh
make -s lint
# The gateways are arm64 and armv7: everything must build for them too.
CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build ./...
CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 go build ./...
go test -count=1 -timeout 20m ./...
# The race detector needs cgo. The packages are found, not listed, so a new
# package with goroutines is covered the day it lands.
race_pkgs=$(grep -rlE --include='*.go' --exclude='*_test.go' '(^|[[:space:]])go (func|[A-Za-z_][A-Za-z0-9_.]*\()' . |
	xargs -n1 dirname | sort -u | grep -v '^\./tests')
echo "race detector over:" $race_pkgs
CGO_ENABLED=1 go test -race -count=1 -timeout 20m $race_pkgs
# The end-to-end tests run again against a daemon built with -race: the
# whole update flow, the MCU fan-out, the stall and cancel paths, windows
# and config apply. (TestInstallKill9Resume is left out: its kills are
# timed against the network rate, and a -race daemon is slow enough to
# finish a life's work between two kills.)
RACE_E2E='^(TestFlowGoodReleaseCommits|TestFlowBadReleaseRollsBack|TestMCUMixedFleetThroughDaemon|TestInstallBusyAndCancelWhileHeadStalls|TestMaintenanceWindows|TestConfigApply)$'
OTAGW_E2E_RACE=1 go test -count=1 -timeout 20m -run "$RACE_E2E" ./tests/
sh scripts/fuzz.sh
echo "make test: all passed"
