#!/bin/sh
# The README's test command: `make test` runs this.
# 1. installs the Debian packages the tests need (only when missing),
# 2. checks gofmt and go vet,
# 3. runs every Go test (the end-to-end tests in tests/ run as root, as CI does),
# 4. runs every fuzz target briefly.
set -eu
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

sh scripts/test-deps.sh
make -s lint
# The gateways are arm64 and armv7: everything must build for them too.
CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build ./...
CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 go build ./...
go test -count=1 -timeout 20m ./...
sh scripts/fuzz.sh
echo "make test: all passed"
