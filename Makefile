# allot — build, test, demo and benchmarks.
#   make demo    run allotd on the example pool with real (short) jobs
#   make simulate  replay the example trace on the example pool
#   make test    the test suite
#   make bench   the benchmarks (Benchmarks/, a package of its own)
SHELL := /bin/bash
SWIFT ?= swift
CONFIG ?= etc/allot/allotd.toml
TRACE ?= examples/trace-mixed.csv
BIN := $(shell $(SWIFT) build --show-bin-path 2>/dev/null)

.PHONY: all deps build release test lint format demo simulate bench bench-daemon figures clean

all: build

deps:
	@scripts/ensure-deps.sh

build: deps
	$(SWIFT) build

# Release binaries link the Swift runtime statically: allotctl starts in 5 ms instead of 9 (no dynamic
# relocation of Foundation), which is most of a one-job `allotctl submit`.
release: deps
	$(SWIFT) build -c release --static-swift-stdlib

test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

lint:
	$(SWIFT) format lint --strict -r Sources Tests Package.swift

format:
	$(SWIFT) format -i -r Sources Tests Package.swift Benchmarks/Package.swift Benchmarks/Benchmarks

# The demo starts allotd on the example pool with a temporary state directory and socket, runs training and
# inference jobs (short real commands) on this machine, and shows the queue, a preemption and the bill.
# `make simulate` replays the example trace on the same pool with allot's policy and two baselines.
demo: deps
	$(SWIFT) build --product allotd
	$(SWIFT) build --product allotctl
	scripts/demo.sh $(BIN) $(CONFIG)

simulate: deps
	$(SWIFT) build --product allotctl
	@echo
	@echo "== allot policy: multifactor priority, cost- and time-aware placement =="
	$(BIN)/allotctl simulate --config $(CONFIG) --trace $(TRACE) --policy allot
	@echo
	@echo "== backfill baseline: multifactor priority and EASY backfill, no cost awareness (as Slurm) =="
	$(BIN)/allotctl simulate --config $(CONFIG) --trace $(TRACE) --policy backfill
	@echo
	@echo "== fifo baseline: strict first come, first served =="
	$(BIN)/allotctl simulate --config $(CONFIG) --trace $(TRACE) --policy fifo

bench: deps
	cd Benchmarks && $(SWIFT) package benchmark

# The daemon's figures: durable submits through the socket, submit to running, RSS with 100,000 pending.
bench-daemon: release
	scripts/daemon-bench.py --bin $(shell $(SWIFT) build -c release --show-bin-path)

# allot against the backfill and fifo baselines on public traces (needs ../shared/data/traces).
figures: deps
	scripts/policy-figures.sh

clean:
	$(SWIFT) package clean
