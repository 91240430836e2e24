#!/usr/bin/env python3
"""Turns Pollux's (OSDI'21) simulator workloads into allot traces with a duration per job.

Pollux's workloads name a model, a GPU count and a batch size per job ("TunedJobs"), not a duration: the
duration follows from the model's profiles in adaptdl's simulator (petuum/adaptdl, branch osdi21-artifact,
simulator/traces/<model>/: placements.csv and scalability.csv for step times on T4s, validation-<bsz>.csv
for iterations per epoch). As Pollux's own get_configurations() does, a rigid job runs its batch size on
GPUs packed 4 per node until its last epoch: duration = iterations × step time (with gradient accumulation
where the local batch exceeds the model's largest). Pure Python; no pandas.

With --speeds PROFILES SUFFIX=MODEL,... (Sia's throughput_profiles directory, e.g. aws=T4,rtx=RTX2080Ti,
dgx=A100) each job also gets a speeds column: its application's one-GPU speed on each model against the
first (the reference, a T4 for aws), the geometric mean over the local batch sizes both profiles measured —
what a user who profiled the application once would give as --speed.

With --speedup each job also gets a speedup column: its rate of work at 1, 2, 4, … 64 GPUs and at its own
count, relative to its own count, from the same profiles (its batch size fixed, as a rigid job's; the simulator
interpolates between them for an elastic job) — instead of the linear speed-up an elastic job gets without it.

Usage: scripts/pollux-trace.py ADAPTDL_SIMULATOR_DIR WORKLOAD.csv OUT.csv [--speeds PROFILES SUFFIX=MODEL,...]
       [--speedup]
"""
import csv
import math
import sys

# adaptdl's simulator/applications.py
APPS = {
    "bert": dict(max_epochs=2),
    "cifar10": dict(max_epochs=100),
    "ncf": dict(max_epochs=10),
    "imagenet": dict(max_epochs=90),
    "deepspeech2": dict(max_epochs=80),
    "yolov3": dict(max_epochs=50, max_local_bsz=8),
}


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def interp(xs, ys, x):
    """Linear interpolation, clamped at the ends."""
    pts = sorted(zip(xs, ys))
    if x <= pts[0][0]:
        return pts[0][1]
    if x >= pts[-1][0]:
        return pts[-1][1]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[-1][1]


class App:
    def __init__(self, root, name):
        import glob
        import os
        d = os.path.join(root, "traces", name)
        self.placements = rows(os.path.join(d, "placements.csv"))
        self.scalability = rows(os.path.join(d, "scalability.csv"))
        self.validation = {}
        for p in glob.glob(os.path.join(d, "validation-*.csv")):
            self.validation[int(p.rsplit("-", 1)[1].split(".")[0])] = rows(p)
        opts = APPS[name]
        self.max_epochs = opts.get("max_epochs") or min(len(v) for v in self.validation.values())
        local = [float(r["local_bsz"]) for r in self.placements]
        self.min_local = min(local)
        self.max_local = opts.get("max_local_bsz") or max(local)
        self.init_bsz = min(self.validation)
        self.max_bsz = max(self.validation)

    def iterations(self, bsz, epoch):
        sizes = sorted(self.validation)
        lo = max([b for b in sizes if b <= bsz], default=sizes[0])
        hi = min([b for b in sizes if b >= bsz], default=sizes[-1])
        it = lambda b: float(self.validation[b][epoch]["iteration"])
        if lo == hi:
            return it(lo)
        return ((bsz - lo) * it(hi) + (hi - bsz) * it(lo)) / (hi - lo)

    def throughput(self, placement, local_bsz):
        placement = tuple(p for p in placement if p)
        placement = min(placement[i:] + placement[:i] for i in range(len(placement)))
        pid = "".join(map(str, placement))
        same = [r for r in self.placements if r["placement"] == pid]
        if not same:
            # Beyond 4 nodes: the scalability profile at the nearest GPU count.
            n = sum(placement)
            near = min({int(r["num_replicas"]) for r in self.scalability}, key=lambda k: (abs(k - n), k))
            same = [r for r in self.scalability if int(r["num_replicas"]) == near]
        xs = [float(r["local_bsz"]) for r in same]
        step = interp(xs, [float(r["step_time"]) for r in same], local_bsz)
        sync = interp(xs, [float(r["sync_time"]) for r in same], local_bsz)
        return step, sync

    def duration(self, replicas, bsz):
        placement = []
        while sum(placement) < replicas:
            placement.append(min(replicas - sum(placement), 4))
        local = math.ceil(bsz / replicas - 1e-8)
        accum = math.ceil(local / self.max_local - 1e-8) - 1
        if replicas == 1 and bsz > self.init_bsz:
            accum = max(1, accum)
        atomic = math.ceil(local / (accum + 1) - 1e-8)
        atomic = min(atomic, int(self.max_bsz / (replicas * (accum + 1))))
        step, sync = self.throughput(placement, atomic)
        total = step + accum * (step - sync)
        return self.iterations(bsz, self.max_epochs - 1) * total


def one_gpu_steps(path):
    """Step time by local batch size at one GPU, from a Sia placements file (its columns in any order)."""
    return {float(r["local_bsz"]): float(r["step_time"]) for r in rows(path) if r["placement"] == "1"}


def app_speeds(profiles, app, models):
    """Per model, the application's one-GPU speed against the first model's."""
    import os
    steps = [one_gpu_steps(os.path.join(profiles, app, f"placements-{suffix}.csv")) for suffix, _ in models]
    out = {}
    for (suffix, model), s in zip(models, steps):
        common = sorted(set(steps[0]) & set(s))
        if not common:
            sys.exit(f"{app}: no local batch size measured on both {models[0][0]} and {suffix}")
        out[model] = math.exp(sum(math.log(steps[0][b] / s[b]) for b in common) / len(common))
    return out


def main():
    args = sys.argv[1:]
    speeds_of = None
    if "--speeds" in args:
        i = args.index("--speeds")
        profiles, mapping = args[i + 1], args[i + 2]
        models = [tuple(p.split("=", 1)) for p in mapping.split(",")]
        speeds_of = lambda app: app_speeds(profiles, app, models)
        del args[i:i + 3]
    speedup = "--speedup" in args
    if speedup:
        args.remove("--speedup")
    root, workload, out = args[:3]
    apps = {}
    speeds = {}
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "kind", "tenant", "submit_time", "duration", "gpus"] + (["speeds"] if speeds_of else [])
                   + (["speedup"] if speedup else []))
        for r in rows(workload):
            name = r["application"]
            app = apps.setdefault(name, App(root, name))
            n = int(r["num_replicas"])
            row = [r["name"], "training", "pollux", r["time"], f"{app.duration(n, int(r['batch_size'])):.1f}", n]
            if speeds_of:
                if name not in speeds:
                    speeds[name] = speeds_of(name)
                    print(f"{name}: " + ", ".join(f"{m} {v:.2f}" for m, v in speeds[name].items()), file=sys.stderr)
                row.append("|".join(f"{m}={v:.3f}" for m, v in speeds[name].items()))
            if speedup:
                bsz = int(r["batch_size"])
                base = app.duration(n, bsz)
                sizes = sorted({1, 2, 4, 8, 16, 32, 64, n})
                row.append("|".join(f"{k}:{base / app.duration(k, bsz):.3f}" for k in sizes))
            w.writerow(row)


if __name__ == "__main__":
    main()
