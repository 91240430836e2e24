#!/usr/bin/env bash
# Compares allot's policy with the backfill (Slurm-like) and fifo baselines on one week of Philly training
# plus an LLM inference service derived from the Azure trace, on Benchmarks/pools/mixed-loaded.toml.
# Needs ../shared/data/traces (see scripts/make-policy-trace.py). Usage: scripts/policy-figures.sh [DAYS]
set -euo pipefail
cd "$(dirname "$0")/.."
days=${1:-7}
out=.build/figures
mkdir -p "$out"
python3 scripts/make-policy-trace.py --days "$days" --out "$out/philly-azure.csv"
swift build -c release --product allotctl >/dev/null
swift build -c release --product allotctl-full >/dev/null
bin=$(swift build -c release --show-bin-path)
for policy in allot backfill fifo; do
    /usr/bin/time -f "  $policy simulated in %e s" "$bin/allotctl" simulate --config Benchmarks/pools/mixed-loaded.toml \
        --trace "$out/philly-azure.csv" --policy "$policy" --json >"$out/$policy.json"
done
python3 scripts/compare.py "$out/allot.json" "$out/backfill.json" "$out/fifo.json"
