#!/usr/bin/env bash
# The demo: allotd on the example pool (etc/allot/allotd.toml) with a temporary state directory and socket,
# running every node's jobs on this machine (short real commands; no GPU needed). It submits training and
# inference jobs, shows the pool and the queue, lets an inference service take GPUs lent to training, and
# prints the bill. Usage: scripts/demo.sh BIN_DIR [CONFIG]
set -euo pipefail

bin=${1:?usage: scripts/demo.sh BIN_DIR [CONFIG]}
config=${2:-etc/allot/allotd.toml}
dir=$(mktemp -d /tmp/allot-demo.XXXXXX)
export ALLOT_SOCKET=$dir/allotd.sock
ctl() { echo "\$ allotctl $*"; "$bin/allotctl" "$@"; echo; }
say() { printf '\n== %s ==\n' "$*"; }

# The example pool, with this machine running every node's jobs.
cp "$config" "$dir/allotd.toml"
cat >>"$dir/allotd.toml" <<EOF

# Added by the demo: run the jobs of every node here, keep state in $dir.
[daemon]
state_dir = "$dir/state"
socket = "$ALLOT_SOCKET"
local_nodes = ["*"]
EOF

say "starting allotd (log: $dir/allotd.log)"
"$bin/allotd" --config "$dir/allotd.toml" >"$dir/allotd.log" 2>&1 &
daemon=$!
cancel_all() {
    "$bin/allotctl" ls --json 2>/dev/null | grep -o '"id" : [0-9]*' | grep -o '[0-9]*$' |
        xargs -r "$bin/allotctl" cancel >/dev/null 2>&1 || true
}
cleanup() {
    cancel_all
    kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 100); do "$bin/allotctl" status >/dev/null 2>&1 && break; sleep 0.1; done

say "training: eight 8-GPU pretraining runs and eight 4-GPU fine-tunes"
for i in 1 2 3 4 5 6 7 8; do
    "$bin/allotctl" submit --gpus 8 --tenant research --name "pretrain-$i" --walltime 2h --estimate 90m \
        -- sh -c 'echo "step 0 on GPUs $CUDA_VISIBLE_DEVICES"; sleep 60' >/dev/null
done
# The fine-tunes are short (--estimate 10m): 40 minutes on an L4 still ends within their hour, so those that
# find the H100s and A100s taken borrow the L4s kept for inference.
for i in 1 2 3 4 5 6 7 8; do
    "$bin/allotctl" submit --gpus 4 --tenant product --name "finetune-$i" --walltime 1h --estimate 10m --grace 3s \
        -- sh -c 'trap "echo checkpointing; exit 0" TERM; echo tuning; sleep 60 & wait' >/dev/null
done
sleep 1
ctl ls
ctl status

say "inference: a service needs 4 L4s; they are lent to a fine-tune, and taken back"
svc=$("$bin/allotctl" submit --kind inference --gpus 4 --tenant product --name llm-serve -- sleep 60)
echo "submitted job $svc"
sleep 1
ctl ls --kind inference
# The fine-tune whose loan is taken back: stopping (its grace), or already back in the queue.
victim=$("$bin/allotctl" ls --state stopping --json | grep -o '"id" : [0-9]*' | head -1 | grep -o '[0-9]*$' || true)
if [ -z "$victim" ]; then
    victim=$("$bin/allotctl" ls --state pending --json | grep -o '"id" : [0-9]*' | head -1 | grep -o '[0-9]*$' || true)
fi
if [ -n "$victim" ]; then
    ctl why "$victim"
else
    echo "(no loan was taken back: the service found free L4s)"
fi
for _ in $(seq 80); do
    [ "$("$bin/allotctl" show "$svc" --json | grep -c '"state" : "running"')" = 1 ] && break
    sleep 0.1
done
ctl why "$svc"
[ -n "$victim" ] && ctl logs "$victim"

say "small services share one GPU: a quarter and half of one L4, priced by their share"
small=$("$bin/allotctl" submit --kind inference --gpus 0.25 --tenant product --name embed-small \
    -- sh -c 'echo "GPU $CUDA_VISIBLE_DEVICES, share $ALLOT_GPU_SHARE"; sleep 60')
"$bin/allotctl" submit --kind inference --gpus 0.5 --gpu-memory 8GiB --tenant product --name rerank -- sleep 60 >/dev/null
sleep 1
ctl why "$small"

say "a job that can never run is refused at submit"
"$bin/allotctl" submit --gpus 16 --topology single-node -- true || true

say "the bill so far"
sleep 2
ctl cost --by tenant
ctl cost --by model

say "stopping: cancel the jobs, then SIGTERM allotd (running jobs would survive a stop)"
cancel_all
for _ in $(seq 100); do
    [ -z "$("$bin/allotctl" ls --state running,stopping --json | grep '"id"')" ] && break
    sleep 0.1
done
ctl ls --all --limit 5
# A demo whose jobs could not start has shown nothing: say so, and fail.
unstarted=$("$bin/allotctl" ls --all --json | grep -c '"could not start' || true)
kill -TERM "$daemon"
status=0
wait "$daemon" || status=$?
echo "allotd exited with status $status"
tail -n 3 "$dir/allotd.log"
if [ "$unstarted" -gt 0 ]; then
    echo "demo failed: $unstarted job(s) could not start (see the REASON column above)" >&2
    exit 1
fi
trap 'rm -rf "$dir"' EXIT
