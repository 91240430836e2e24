#!/usr/bin/env bash
# Inference services driven by Azure's LLM inference trace 2023 (code and conversation) beside a day of
# Philly training on the example pool: peak provisioning, Knative's autoscaler and allot's side by side.
# Three loads: Azure's hour as it is; a day made from it (scripts/make-day-requests.py: the hour's requests
# at the rate of a production inference service's day, Alibaba's GenAI serving trace); and that day with half
# the daily swing. Needs ../shared/data/traces (TRACES=DIR). With KNATIVE_TUNED=1, also Knative's autoscaler
# tuned per service to allot's share in time (scripts/knative-tuning.py; about 5 minutes a load).
# Usage: [KNATIVE_TUNED=1] scripts/service-figures.sh [hour|day|half-day…] [-- simulate options, e.g. --json]
set -euo pipefail
cd "$(dirname "$0")/.."
traces=$(realpath "${TRACES:-../shared/data/traces}")
azure=$traces/azure-llm-inference-2023
lora=$traces/alibaba-genai-lora-2026/lora_request_trace.csv
out=.build/figures
mkdir -p "$out"
loads=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do loads+=("$1"); shift; done
[ $# -gt 0 ] && shift
[ ${#loads[@]} -gt 0 ] || loads=(hour day half-day)
# The training jobs of the example trace (its inference rows are the services here).
awk -F, 'NR == 1 || $2 == "training"' examples/trace-mixed.csv >"$out/training.csv"
swift build -c release --product allotctl >/dev/null
swift build -c release --product allotctl-full >/dev/null
bin=$(swift build -c release --show-bin-path)
for load in "${loads[@]}"; do
    for s in code conv; do
        case $load in
        hour) cp "$azure/AzureLLMInferenceTrace_$s.csv" "$out/$load-$s.csv" ;;
        day) scripts/make-day-requests.py "$azure/AzureLLMInferenceTrace_$s.csv" "$lora" "$out/$load-$s.csv" >&2 ;;
        half-day)
            scripts/make-day-requests.py --swing 0.5 "$azure/AzureLLMInferenceTrace_$s.csv" "$lora" \
                "$out/$load-$s.csv" >&2
            ;;
        *)
            echo "unknown load \"$load\": hour, day or half-day" >&2
            exit 64
            ;;
        esac
    done
    sed -e "s|@CODE@|$PWD/$out/$load-code.csv|" -e "s|@CONV@|$PWD/$out/$load-conv.csv|" \
        Benchmarks/services/azure.toml >"$out/services-$load.toml"
    echo "== $load"
    "$bin/allotctl" simulate --config etc/allot/allotd.toml --services "$out/services-$load.toml" \
        --trace "$out/training.csv" "$@"
    if [ -n "${KNATIVE_TUNED:-}" ]; then
        # Knative's knobs tuned per service to serve as many requests in time as allot, for the fewest
        # replica-hours (scripts/knative-tuning.py), then run beside the training as its column.
        scripts/knative-tuning.py "$bin/allotctl" etc/allot/allotd.toml "$out/services-$load.toml" \
            "$out/services-$load-knative-tuned.toml"
        echo "== $load, Knative tuned"
        "$bin/allotctl" simulate --config etc/allot/allotd.toml --services "$out/services-$load-knative-tuned.toml" \
            --trace "$out/training.csv" --scaling knative "$@"
    fi
done
