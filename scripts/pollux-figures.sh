#!/usr/bin/env bash
# Pollux's (OSDI'21) simulator workloads on its 64-T4 cluster, rigid ("TunedJobs" GPU counts) and elastic, beside
# the published Tiresias+TunedJobs and Pollux average JCTs (../shared/data/traces/PUBLISHED-RESULTS.md).
# Needs ../shared/data/traces/pollux-workloads and adaptdl's simulator profiles (petuum/adaptdl, branch
# osdi21-artifact: simulator/traces). Usage: scripts/pollux-figures.sh ADAPTDL_SIMULATOR_DIR [LOAD]
set -euo pipefail
cd "$(dirname "$0")/.."
adaptdl=${1:?give the path of the simulator directory of adaptdl, branch osdi21-artifact}
load=${2:-}
shared=../shared/data/traces/pollux-workloads
dir=$shared/simulator/workloads${load:+-$load}
out=.build/figures/pollux${load:+-$load}
mkdir -p "$out"
swift build -c release --product allotctl-full >/dev/null
bin=$(swift build -c release --show-bin-path)
for w in "$dir"/workload-*.csv; do
    n=$(basename "$w" .csv)
    python3 scripts/pollux-trace.py "$adaptdl" "$w" "$out/$n.csv" --speedup
    for variant in rigid elastic; do
        args=()
        [ "$variant" = elastic ] && args=(--elastic 2)
        "$bin/allotctl" simulate --config Benchmarks/pools/pollux-t4.toml --trace "$out/$n.csv" --policy allot \
            --json "${args[@]}" >"$out/$n-$variant.json"
    done
done
python3 - "$out" "$shared/published_results/results-jobload" "${load:-1.0}" <<'PY'
import json, sys, glob, os
out, published, load = sys.argv[1:4]
def mean(v): return sum(v) / len(v)
def pub(policy):
    jcts = json.load(open(f"{published}/{policy}-{load}/summary.json"))["jcts"]
    return {w: mean(list(j.values())) / 3600 for w, j in jcts.items()}
tiresias, pollux = pub("tiresias"), pub("pollux")
print(f"{'workload':12s} {'allot rigid':>12s} {'allot elastic':>14s} {'Tiresias+TJ':>12s} {'Pollux':>8s}")
rows = []
for path in sorted(glob.glob(f"{out}/workload-*-rigid.json")):
    w = os.path.basename(path).split("-rigid")[0]
    rigid = json.load(open(path))["avg_jct_s"] / 3600
    elastic = json.load(open(path.replace("-rigid", "-elastic")))["avg_jct_s"] / 3600
    key = next((k for k in tiresias if k.startswith(w) or k.split(".")[0] == w), w)
    rows.append((rigid, elastic, tiresias.get(key), pollux.get(key)))
    print(f"{w:12s} {rigid:11.2f}h {elastic:13.2f}h {tiresias.get(key, float('nan')):11.2f}h {pollux.get(key, float('nan')):7.2f}h")
r, e = mean([x[0] for x in rows]), mean([x[1] for x in rows])
t, p = mean([x[2] for x in rows if x[2]]), mean([x[3] for x in rows if x[3]])
print(f"{'mean':12s} {r:11.2f}h {e:13.2f}h {t:11.2f}h {p:7.2f}h")
print(f"allot rigid / Tiresias+TJ: {r / t:.3f}; allot elastic / Tiresias+TJ: {e / t:.3f}; elastic / Pollux: {e / p:.3f}")
PY

