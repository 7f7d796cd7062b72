# otagw — `make help` lists the targets.
SHELL := /bin/sh
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/otagw/otagw/internal/buildinfo.Version=$(VERSION)
BIN := bin

.PHONY: help build cross deb test yocto-check bench fuzz lint demo deps clean torture

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

build: ## static binary for this machine: bin/otagw
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/otagw ./cmd/otagw

cross: ## static binaries for the gateways: bin/otagw-linux-arm64, bin/otagw-linux-armv7
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/otagw-linux-arm64 ./cmd/otagw
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/otagw-linux-armv7 ./cmd/otagw
	@ls -l $(BIN)/otagw-linux-arm64 $(BIN)/otagw-linux-armv7

deb: ## Debian packages for amd64, arm64 and armhf in dist/ (dpkg-deb; lintian-clean)
	sh scripts/deb.sh amd64 arm64 armhf

deps: ## install the Debian packages the tests need (only the missing ones)
	sh scripts/test-deps.sh

test: ## the whole suite: deps, lint, go test ./..., a short fuzz pass of every target
	sh scripts/test.sh

yocto-check: ## yocto-check-layer on yocto/meta-otagw with real bitbake, offline (about 25 minutes on 2 cores)
	sh scripts/yocto-check.sh

torture: ## N real power cuts of the QEMU gateway (N=100 by default; J=gateways side by side; SEED=... replays), see docs/reliability.md
	sh scripts/torture.sh $(N)

bench: ## benchmarks, each against the physical limit measured in the same run
	sh scripts/bench.sh

fuzz: ## longer fuzzing of every target (FUZZTIME=100000x inputs each by default; a duration like 60s works too)
	FUZZTIME=$${FUZZTIME:-100000x} sh scripts/fuzz.sh

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

demo: ## run the main job on a simulated gateway in ./demo (Ctrl-C stops it)
	sh scripts/demo.sh

clean: ## remove build output and the demo directory
	rm -rf $(BIN) demo dist
