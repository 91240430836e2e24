#!/usr/bin/env bash
# Inference services driven by Azure's LLM inference trace 2023 (code and conversation) beside a day of
# Philly training on the example pool: peak provisioning, Knative's autoscaler and allot's side by side.
# Needs ../shared/data/traces (TRACES=DIR). Usage: scripts/service-figures.sh [--json]
set -euo pipefail
cd "$(dirname "$0")/.."
traces=$(realpath "${TRACES:-../shared/data/traces}")/azure-llm-inference-2023
out=.build/figures
mkdir -p "$out"
sed "s|@TRACES@|$traces|" Benchmarks/services/azure.toml >"$out/services-azure.toml"
# The training jobs of the example trace (its inference rows are the services here).
awk -F, 'NR == 1 || $2 == "training"' examples/trace-mixed.csv >"$out/training.csv"
swift build -c release --product allotctl >/dev/null
swift build -c release --product allotctl-full >/dev/null
bin=$(swift build -c release --show-bin-path)
"$bin/allotctl" simulate --config etc/allot/allotd.toml --services "$out/services-azure.toml" \
    --trace "$out/training.csv" "$@"
