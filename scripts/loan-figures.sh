#!/usr/bin/env bash
# The inference reserve's loans, side by side in one run: a Philly training week (about 1.3x the pool's
# capacity) plus one Azure LLM inference service (conversation, then code) on the 256-GPU pool of
# Benchmarks/pools/loans-256.toml, without a reserve and with reserves of several sizes, each lent by the
# forecast (allotd's rule) and, to compare, by "always". Seeds vary the service's daily jitter; figures are
# medians over them. Needs ../shared/data/traces (see scripts/make-policy-trace.py).
# Usage: [LOAN_FIGURES_OUT=DIR] scripts/loan-figures.sh [SEEDS (default "7 8 9")] [RESERVES (default "0 24 48 64")]
#        [extra simulate options, e.g. --checkpoint-every 30m]
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-7 8 9}
reserves=${2:-0 24 48 64}
shift $(( $# > 2 ? 2 : $# )) || true
out=${LOAN_FIGURES_OUT:-.build/loan-figures}
mkdir -p "$out"
swift build -c release --product allotctl >/dev/null
swift build -c release --product allotctl-full >/dev/null
bin=$(swift build -c release --show-bin-path)/allotctl
base=Benchmarks/pools/loans-256.toml
sed '/^\[\[inference_reserve\]\]/,$d' "$base" >"$out/pool-0.toml"
jobs=()
for svc in chat code; do
    for seed in $seeds; do
        python3 scripts/make-policy-trace.py --services "$svc" --peak 48 --memory 40 --seed "$seed" \
            --out "$out/$svc-$seed.csv" >/dev/null
        for r in $reserves; do
            cfg="$out/pool-$r.toml"
            if [ "$r" != 0 ] && [ ! -f "$cfg" ]; then
                cp "$out/pool-0.toml" "$cfg"
                printf '[[inference_reserve]]\ngpu_model = "A100-80GB"\ngpus = %s\n' "$r" >>"$cfg"
            fi
            rules="forecast always"
            [ "$r" = 0 ] && rules="none"
            for rule in $rules; do
                lend=()
                [ "$rule" = always ] && lend=(--lending always)
                jobs+=("$bin simulate --config $cfg --trace $out/$svc-$seed.csv --json ${lend[*]} $* >$out/$svc-$seed-$r-$rule.json")
            done
        done
    done
done
printf '%s\n' "${jobs[@]}" | xargs -P "$(nproc)" -I{} sh -c '{}'
python3 scripts/loan-table.py "$out" "$seeds" "$reserves"
