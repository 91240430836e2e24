#!/usr/bin/env bash
# FGD's experiment (Weng et al., USENIX ATC'23, Fig. 7) on the 17 openb workloads: allot's placement against
# FGD, best fit, GPU packing and random, 10 seeds each, side by side with the published figures.
# Needs the openb trace (OPENB, by default ../shared/data/traces/alibaba-openb-gpu-2023).
# Usage: scripts/fgd-figures.sh [WORKLOAD…]   (env OPENB, SEEDS=42-51, OUT=.build/figures-fgd)
set -euo pipefail
cd "$(dirname "$0")/.."
openb=${OPENB:-../shared/data/traces/alibaba-openb-gpu-2023}
seeds=${SEEDS:-42-51}
out=${OUT:-.build/figures-fgd}
workloads=("$@")
if [ ${#workloads[@]} -eq 0 ]; then
    workloads=(default gpushare40 gpushare60 gpushare80 gpushare100 gpuspec10 gpuspec20 gpuspec25 gpuspec33
        multigpu20 multigpu30 multigpu40 multigpu50 cpu050 cpu100 cpu200 cpu250)
fi
if [ ! -f "$openb/openb_node_list_gpu_node.csv" ]; then
    echo "fgd-figures: no openb trace at $openb (set OPENB to the folder with openb_node_list_gpu_node.csv)" >&2
    exit 1
fi
swift build -c release --static-swift-stdlib --product allotctl-full >/dev/null
bin=$(swift build -c release --show-bin-path)
mkdir -p "$out"
for w in "${workloads[@]}"; do
    /usr/bin/time -f "  $w: all rules, seeds $seeds, in %e s" "$bin/allotctl-full" simulate \
        --openb-nodes "$openb/openb_node_list_gpu_node.csv" --openb-pods "$openb/openb_pod_list_$w.csv" \
        --seeds "$seeds" --json >"$out/$w.json"
done
python3 scripts/fgd-table.py "$out" "${workloads[@]}" | tee "$out/table.md"
