# allot — build, test, demo and benchmarks.
#   make demo    run allot on the example pool and trace
#   make test    the test suite
#   make bench   the benchmarks (Benchmarks/, a package of its own)
SHELL := /bin/bash
SWIFT ?= swift
CONFIG ?= etc/allot/allotd.toml
TRACE ?= examples/trace-mixed.csv
BIN := $(shell $(SWIFT) build --show-bin-path 2>/dev/null)

.PHONY: all deps build release test lint format demo bench figures clean

all: build

deps:
	@scripts/ensure-deps.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

lint:
	$(SWIFT) format lint --strict -r Sources Tests Package.swift

format:
	$(SWIFT) format -i -r Sources Tests Package.swift Benchmarks/Package.swift Benchmarks/Benchmarks

# Until allotd exists, the demo replays the example trace (Philly training jobs plus inference replicas
# derived from the Azure LLM trace) on the example pool, with allot's policy and the FIFO baseline.
demo: deps
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

# allot against the backfill and fifo baselines on public traces (needs ../shared/data/traces).
figures: deps
	scripts/policy-figures.sh

clean:
	$(SWIFT) package clean
