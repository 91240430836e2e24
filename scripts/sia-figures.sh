#!/usr/bin/env bash
# Sia's (SOSP'23) heterogeneous setup (Table 3): its 8 Philly workloads on 64 GPUs of three models
# (Benchmarks/pools/sia-hetero.toml), rigid ("TunedJobs" GPU counts) and elastic, beside the published rows
# (../shared/data/traces/PUBLISHED-RESULTS.md). Durations on a T4 come from adaptdl's simulator profiles
# (petuum/adaptdl, branch osdi21-artifact: simulator/traces), as for Pollux's workloads; on the other models each
# job runs at its application's speeds from Sia's one-GPU profiles (trace column speeds), as in Sia's world.
# Each variant runs twice: jobs that tell the scheduler their speeds (as a user gives --speed), and jobs that do
# not (--hide-speeds: the scheduler goes by the pool file's one speed per model).
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
    python3 scripts/pollux-trace.py "$adaptdl" "$w" "$out/$n.csv" \
        --speeds "$shared/../../throughput_profiles" aws=T4,rtx=RTX2080Ti,dgx=A100 --speedup 2>/dev/null
    for variant in rigid-hidden elastic-hidden rigid elastic; do
        args=()
        case $variant in elastic*) args+=(--elastic 2) ;; esac
        case $variant in *-hidden) args+=(--hide-speeds) ;; esac
        "$bin/allotctl" simulate --config Benchmarks/pools/sia-hetero.toml --trace "$out/$n.csv" --policy allot \
            --json "${args[@]}" >"$out/$n-$variant.json"
    done
done
python3 - "$out" <<'PY'
import json, sys, glob, statistics as st
out = sys.argv[1]
print(f"{'allot':16s} {'avg JCT':>14s} {'p99 JCT':>9s} {'makespan':>15s} {'GPU-h/job':>14s}")
for variant in ("rigid-hidden", "elastic-hidden", "rigid", "elastic"):
    runs = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/workload-*-{variant}.json"))]
    def ms(key, scale=3600):
        v = [r[key] / scale for r in runs]
        return st.mean(v), st.pstdev(v)
    jct, p99, mk = ms("avg_jct_s"), ms("p99_jct_s"), ms("makespan_s")
    gh = [r["gpu_hours"] / r["jobs"] for r in runs]
    print(f"{variant:16s} {jct[0]:5.2f} ± {jct[1]:.2f} h {p99[0]:7.1f} h {mk[0]:6.1f} ± {mk[1]:.1f} h"
          f" {st.mean(gh):5.1f} ± {st.pstdev(gh):.1f}")
print("published (Table 3, Philly): Sia 0.6 ± 0.1 h, p99 9.5 h, makespan 14.2 ± 1.9 h, 4.0 ± 0.7 GPU-h/job;")
print("  Pollux 1.0 ± 0.1 h, 14.9 h, 24.5 ± 7.9 h, 5.6 ± 1.1; Gavel+TJ 1.9 ± 0.3 h, 30.0 h, 33.8 ± 8.6 h, 9.0 ± 6.3")
PY
