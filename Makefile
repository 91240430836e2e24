# allot — build, test, demo and benchmarks.
#   make demo    run allotd on the example pool with real (short) jobs
#   make simulate  replay the example trace on the example pool
#   make simulate-faults SEEDS=10000   the controller under seeded faults (crashes, lost agents, GPU failures)
#   make figures-fgd   fractional-GPU placement against FGD on Alibaba's openb trace (docs/fractional-gpus.md)
#   make figures-services   inference services on Azure's LLM traces: peak, Knative, allot (docs/services.md)
#   make figures-loans   the inference reserve's loans: reserve sizes, forecast vs always (docs/scheduling.md)
#   make test    the test suite
#   make bench   the benchmarks (Benchmarks/, a package of its own)
#   make install / make uninstall   release binaries, systemd units, config, man pages, completions, docs
#                (PREFIX=/usr/local, DESTDIR for staging; see docs/operations.md)
SHELL := /bin/bash
SWIFT ?= swift
CONFIG ?= etc/allot/allotd.toml
TRACE ?= examples/trace-mixed.csv
BIN := $(shell $(SWIFT) build --show-bin-path 2>/dev/null)

.PHONY: all deps build release test lint format demo simulate simulate-faults bench bench-daemon bench-ha figures figures-fgd figures-pollux figures-sia figures-services figures-loans clean install install-files uninstall deb deb-tree \
	verify-units

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/allot
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
RELEASE_BIN = $(shell $(SWIFT) build -c release --show-bin-path 2>/dev/null)
GENERATED := .build/install

all: build

deps:
	@scripts/ensure-deps.sh

build: deps
	$(SWIFT) build

# Release binaries link the Swift runtime statically (no dynamic relocation of Foundation). allotctl is a
# small front that runs a plain submit itself and execs allotctl-full for the rest (docs/development.md).
release: deps
	$(SWIFT) build -c release --static-swift-stdlib

test:
	@scripts/ensure-deps.sh --test
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
	$(SWIFT) build --product allot-supervise
	$(SWIFT) build --product allotctl
	$(SWIFT) build --product allotctl-full
	scripts/demo.sh $(BIN) $(CONFIG)

simulate: deps
	$(SWIFT) build --product allotctl
	$(SWIFT) build --product allotctl-full
	@echo
	@echo "== allot policy: multifactor priority, cost- and time-aware placement =="
	$(BIN)/allotctl simulate --config $(CONFIG) --trace $(TRACE) --policy allot
	@echo
	@echo "== backfill baseline: multifactor priority and EASY backfill, no cost awareness (as Slurm) =="
	$(BIN)/allotctl simulate --config $(CONFIG) --trace $(TRACE) --policy backfill
	@echo
	@echo "== fifo baseline: strict first come, first served =="
	$(BIN)/allotctl simulate --config $(CONFIG) --trace $(TRACE) --policy fifo

# The controller under seeded faults: every invariant checked after every step; a failure prints its seed
# and how to replay it (allotctl simulate-faults --seed S).
SEEDS ?= 1000
FIRST ?= 1
STEPS ?= 2000
simulate-faults: release
	$(RELEASE_BIN)/allotctl-full simulate-faults --seeds $(SEEDS) --first $(FIRST) --steps $(STEPS)

bench: deps
	cd Benchmarks && $(SWIFT) package benchmark

# The daemon's figures: durable submits through the socket, submit to running, RSS with 100,000 pending.
bench-daemon: release
	scripts/daemon-bench.py --bin $(shell $(SWIFT) build -c release --show-bin-path)

# Several controllers on etcd: etcd's put rate, submits/s on etcd and on local disk, failovers (docs/ha.md).
bench-ha: release
	scripts/ensure-deps.sh --test
	scripts/ha-bench.py --bin $(shell $(SWIFT) build -c release --show-bin-path)

# allot against the backfill and fifo baselines on public traces (needs ../shared/data/traces).
figures: deps
	scripts/policy-figures.sh

# FGD's fragmentation experiment on the 17 openb workloads, allot's placement against FGD, best fit, packing
# and random, 10 seeds each (needs the openb trace: OPENB=DIR; docs/fractional-gpus.md).
OPENB ?= ../shared/data/traces/alibaba-openb-gpu-2023
figures-fgd: deps
	OPENB=$(OPENB) scripts/fgd-figures.sh

# Inference services replaying Azure's LLM inference trace beside a day of training (needs the Azure trace:
# TRACES=DIR, the folder of traces; docs/services.md).
TRACES ?= ../shared/data/traces
# Pollux's (OSDI'21) workloads on its 64-T4 cluster against the published Tiresias+TunedJobs and Pollux JCTs.
# Needs ../shared/data/traces/pollux-workloads and adaptdl's simulator profiles: ADAPTDL=path/to/adaptdl/simulator
# (github.com/petuum/adaptdl, branch osdi21-artifact).
figures-pollux: deps
	scripts/pollux-figures.sh $(ADAPTDL)

# Sia's heterogeneous setup (Table 3: T4, RTX 2080Ti and A100): the same needs, plus sia-workloads.
figures-sia: deps
	scripts/sia-figures.sh $(ADAPTDL)

figures-services: deps
	TRACES=$(TRACES) scripts/service-figures.sh

# The inference reserve's loans: a Philly week plus each Azure service, reserves of 0-64 A100s lent by the
# forecast and by "always", medians over 3 seeds (needs ../shared/data/traces; docs/scheduling.md).
figures-loans: deps
	scripts/loan-figures.sh

# The unit with this installation's paths.
$(GENERATED)/%.service: systemd/%.service.in
	@mkdir -p $(GENERATED)
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' $< > $@

# Man pages come from argument-parser (the same texts as --help).
$(GENERATED)/man: release
	@mkdir -p $@
	@# In a build directory of its own: the plugin builds the products again, without the static runtime,
	@# and would leave those in .build/release for install to copy.
	$(SWIFT) package --scratch-path .build/manual --allow-writing-to-directory $@ generate-manual --output-directory $@

install: release $(GENERATED)/man
	@$(MAKE) --no-print-directory install-files

# The installed tree from the binaries in FROM (the release build; make install builds it first). Binaries
# that load the Swift runtime from the toolchain are refused: only the package test installs those
# (ALLOW_SWIFT_RUNTIME=1, on a machine that has the toolchain). Man pages are installed when generated.
FROM ?= $(RELEASE_BIN)
install-files: $(GENERATED)/allotd.service $(GENERATED)/allotd-agent.service
	@for b in allotd allotctl allotctl-full; do \
		if [ "$(ALLOW_SWIFT_RUNTIME)" != 1 ] && ldd $(FROM)/$$b 2>/dev/null | grep -q libswiftCore; then \
			echo "$(FROM)/$$b needs the Swift runtime at run time: not installed" >&2; exit 1; fi; done
	$(FROM)/allotctl --generate-completion-script bash > $(GENERATED)/allotctl.bash
	$(FROM)/allotctl --generate-completion-script zsh > $(GENERATED)/_allotctl
	$(FROM)/allotctl --generate-completion-script fish > $(GENERATED)/allotctl.fish
	install -D -m 0755 $(FROM)/allotd $(DESTDIR)$(BINDIR)/allotd
	install -D -m 0755 $(FROM)/allotctl $(DESTDIR)$(BINDIR)/allotctl
	install -D -m 0755 $(FROM)/allotctl-full $(DESTDIR)$(BINDIR)/allotctl-full
	install -D -m 0755 $(FROM)/allot-supervise $(DESTDIR)$(BINDIR)/allot-supervise
	install -D -m 0644 $(GENERATED)/allotd.service $(DESTDIR)$(UNITDIR)/allotd.service
	install -D -m 0644 systemd/allotd.socket $(DESTDIR)$(UNITDIR)/allotd.socket
	install -D -m 0644 $(GENERATED)/allotd-agent.service $(DESTDIR)$(UNITDIR)/allotd-agent.service
	install -D -m 0644 systemd/allot.sysusers $(DESTDIR)$(SYSUSERSDIR)/allot.conf
	install -D -m 0644 systemd/allot.tmpfiles $(DESTDIR)$(TMPFILESDIR)/allot.conf
	@# An existing configuration is never overwritten.
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/allot/allotd.toml ]; then \
		echo "keeping $(DESTDIR)$(SYSCONFDIR)/allot/allotd.toml (the example is in $(DOCDIR)/allotd.toml.example)"; \
	else \
		install -D -m 0644 etc/allot/allotd.toml $(DESTDIR)$(SYSCONFDIR)/allot/allotd.toml; \
	fi
	install -D -m 0644 etc/allot/allotd.toml $(DESTDIR)$(DOCDIR)/allotd.toml.example
	if [ -d $(GENERATED)/man ]; then install -D -m 0644 -t $(DESTDIR)$(MANDIR)/man1 $(GENERATED)/man/*.1; fi
	install -D -m 0644 $(GENERATED)/allotctl.bash $(DESTDIR)$(BASHCOMPDIR)/allotctl
	install -D -m 0644 $(GENERATED)/_allotctl $(DESTDIR)$(ZSHCOMPDIR)/_allotctl
	install -D -m 0644 $(GENERATED)/allotctl.fish $(DESTDIR)$(FISHCOMPDIR)/allotctl.fish
	install -D -m 0644 -t $(DESTDIR)$(DOCDIR) README.md docs/*.md
	@echo "installed; next: systemd-sysusers; systemd-tmpfiles --create; systemctl daemon-reload;"
	@echo "      systemctl enable --now allotd.socket allotd.service   (docs/operations.md)"

# A Debian package of the release build, with Debian's paths (scripts/make-deb.sh; checked by lintian).
# Debian's paths (the package test stages its tree with the same: Tests/systemd-harness/package-lifecycle.sh).
DEB_LAYOUT = PREFIX=/usr UNITDIR=/lib/systemd/system SYSUSERSDIR=/usr/lib/sysusers.d TMPFILESDIR=/usr/lib/tmpfiles.d
VERSION ?= $(shell sed -n 's/^public let allotVersion = "\(.*\)"/\1/p' Sources/AllotDaemon/AgentLink.swift)
deb: release
	rm -rf .build/deb
	$(MAKE) install DESTDIR=$(CURDIR)/.build/deb/stage GENERATED=.build/deb/gen $(DEB_LAYOUT) >/dev/null
	scripts/make-deb.sh .build/deb/stage $(VERSION) .
	@if command -v lintian >/dev/null; then lintian --info --fail-on error,warning ./allot_$(VERSION)_*.deb; \
	else echo "lintian is not installed: apt-get install lintian to check the package"; fi

# The package's tree in STAGE from the binaries in FROM, with nothing built: the package test stages the
# debug build with it (Tests/systemd-harness/package-lifecycle.sh), then runs scripts/make-deb.sh.
deb-tree:
	@$(MAKE) --no-print-directory install-files DESTDIR=$(STAGE) $(DEB_LAYOUT)

# Leaves the configuration and the state directory (/var/lib/allot): they are the operator's.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/allotd $(DESTDIR)$(BINDIR)/allotctl $(DESTDIR)$(BINDIR)/allotctl-full \
		$(DESTDIR)$(BINDIR)/allot-supervise
	rm -f $(DESTDIR)$(UNITDIR)/allotd.service $(DESTDIR)$(UNITDIR)/allotd.socket $(DESTDIR)$(UNITDIR)/allotd-agent.service
	rm -f $(DESTDIR)$(SYSUSERSDIR)/allot.conf $(DESTDIR)$(TMPFILESDIR)/allot.conf
	rm -f $(DESTDIR)$(MANDIR)/man1/allotd.1 $(DESTDIR)$(MANDIR)/man1/allotctl.1
	rm -f $(DESTDIR)$(BASHCOMPDIR)/allotctl $(DESTDIR)$(ZSHCOMPDIR)/_allotctl $(DESTDIR)$(FISHCOMPDIR)/allotctl.fish
	rm -rf $(DESTDIR)$(DOCDIR)
	@echo "kept $(SYSCONFDIR)/allot and /var/lib/allot"

# systemd's own check of the units, with ExecStart at the built binary (the tests do the same).
verify-units: build
	@mkdir -p $(GENERATED)/verify
	for u in allotd allotd-agent; do \
		sed -e 's|@BINDIR@|$(BIN)|g' -e 's|@SYSCONFDIR@|/etc|g' -e 's|@DOCDIR@|$(CURDIR)/docs|g' \
			systemd/$$u.service.in > $(GENERATED)/verify/$$u.service; \
	done
	cp systemd/allotd.socket $(GENERATED)/verify/
	cd $(GENERATED)/verify && systemd-analyze verify --recursive-errors=no ./allotd.service ./allotd.socket \
		./allotd-agent.service

clean:
	$(SWIFT) package clean
