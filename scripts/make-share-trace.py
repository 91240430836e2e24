#!/usr/bin/env python3
"""A trace of inference jobs that each take a share of one GPU, with the share sizes of Alibaba's openb
production trace (its single-GPU tasks asking for less than a whole GPU): Poisson arrivals, exponential
lifetimes, all on one GPU model. For measuring how the scheduler's pass places shares (docs/fractional-gpus.md).

Usage: scripts/make-share-trace.py OPENB_POD_LIST.csv OUT.csv [--rate 45] [--jobs 4000] [--mean-hours 1]
       [--gpu-model L4] [--seed 7]
"""
import argparse
import csv
import random


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pods")
    ap.add_argument("out")
    ap.add_argument("--rate", type=float, default=45, help="arrivals per hour")
    ap.add_argument("--jobs", type=int, default=4000)
    ap.add_argument("--mean-hours", type=float, default=1)
    ap.add_argument("--gpu-model", default="L4")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    with open(a.pods) as f:
        shares = [int(r["gpu_milli"]) for r in csv.DictReader(f) if r["num_gpu"] == "1" and 0 < int(r["gpu_milli"]) < 1000]
    t = 0.0
    with open(a.out, "w") as f:
        f.write("id,kind,gpus,gpu_model,submit_time,duration\n")
        for i in range(a.jobs):
            t += rng.expovariate(a.rate / 3600)
            f.write(f"{i},inference,{rng.choice(shares) / 1000},{a.gpu_model},{t:.0f},"
                    f"{rng.expovariate(1 / (a.mean_hours * 3600)):.0f}\n")
    print(f"{a.out}: {a.jobs} shares of {len(shares)} openb sizes at {a.rate:g}/h")


if __name__ == "__main__":
    main()
