#!/usr/bin/env bash
# Sia's (SOSP'23) heterogeneous setup (Table 3): its 8 Philly workloads on 64 GPUs of three models
# (Benchmarks/pools/sia-hetero.toml), rigid ("TunedJobs" GPU counts) and elastic, beside the published rows
# (../shared/data/traces/PUBLISHED-RESULTS.md). Durations on a T4 come from adaptdl's simulator profiles
# (petuum/adaptdl, branch osdi21-artifact: simulator/traces), as for Pollux's workloads; allot knows one speed
# per GPU model (the pool file says which), where Sia measures each application on each model.
# Usage: scripts/sia-figures.sh ADAPTDL_SIMULATOR_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
adaptdl=${1:?give the path of the simulator directory of adaptdl, branch osdi21-artifact}
shared=../shared/data/traces/sia-workloads/workloads/philly
out=.build/figures/sia
mkdir -p "$out"
swift build -c release --product allotctl >/dev/null
swift build -c release --product allotctl-full >/dev/null
bin=$(swift build -c release --show-bin-path)
for w in "$shared"/workload-*.csv; do
    n=$(basename "$w" .csv)
    python3 scripts/pollux-trace.py "$adaptdl" "$w" "$out/$n.csv"
    for variant in rigid elastic; do
        args=()
        [ "$variant" = elastic ] && args=(--elastic 2)
        "$bin/allotctl" simulate --config Benchmarks/pools/sia-hetero.toml --trace "$out/$n.csv" --policy allot \
            --json "${args[@]}" >"$out/$n-$variant.json"
    done
done
python3 - "$out" <<'PY'
import json, sys, glob, statistics as st
out = sys.argv[1]
print(f"{'allot':10s} {'avg JCT':>14s} {'p99 JCT':>9s} {'makespan':>15s} {'GPU-h/job':>14s}")
for variant in ("rigid", "elastic"):
    runs = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/workload-*-{variant}.json"))]
    def ms(key, scale=3600):
        v = [r[key] / scale for r in runs]
        return st.mean(v), st.pstdev(v)
    jct, p99, mk = ms("avg_jct_s"), ms("p99_jct_s"), ms("makespan_s")
    gh = [r["gpu_hours"] / r["jobs"] for r in runs]
    print(f"{variant:10s} {jct[0]:5.2f} ± {jct[1]:.2f} h {p99[0]:7.1f} h {mk[0]:6.1f} ± {mk[1]:.1f} h"
          f" {st.mean(gh):5.1f} ± {st.pstdev(gh):.1f}")
print("published (Table 3, Philly): Sia 0.6 ± 0.1 h, p99 9.5 h, makespan 14.2 ± 1.9 h, 4.0 ± 0.7 GPU-h/job;")
print("  Pollux 1.0 ± 0.1 h, 14.9 h, 24.5 ± 7.9 h, 5.6 ± 1.1; Gavel+TJ 1.9 ± 0.3 h, 30.0 h, 33.8 ± 8.6 h, 9.0 ± 6.3")
PY
