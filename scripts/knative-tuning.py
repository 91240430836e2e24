#!/usr/bin/env python3
"""Knative's autoscaler tuned per service to serve as many requests within the SLO as allot does, for the
fewest replica-hours: the baseline a careful operator of Knative would run, beside its defaults.

For each service of SERVICES.toml it runs the services alone (`allotctl simulate --services --scaling knative`)
over a grid of Knative's knobs — `target` from 70% down to 12% of a replica's concurrency, scale-down delay
0, 10 or 20 minutes, the stable and panic windows at Knative's 60 s / 6 s or at allot's 30 s / 3 s — and keeps
the cheapest setting (replica-hours) whose share within the SLO is at least allot's for that service (the
`allot` column, run the same way); where none is, the one with the highest share. It prints the choice and
writes SERVICES-tuned.toml with each service's `knative` key set to it, for a run beside training.

Usage: scripts/knative-tuning.py ALLOTCTL POOL.toml SERVICES.toml OUT.toml
"""
import itertools
import json
import os
import re
import subprocess
import sys
import tomllib

TARGETS = [0.7, 0.6, 0.5, 0.42, 0.35, 0.3, 0.25, 0.18, 0.12]
DELAYS = ["0s", "10m", "20m"]
WINDOWS = [("60s", "6s"), ("30s", "3s")]


def simulate(allotctl, pool, services_text, scaling, path):
    with open(path, "w") as f:
        f.write(services_text)
    out = subprocess.run(
        [allotctl, "simulate", "--config", pool, "--services", path, "--scaling", scaling, "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    runs = json.loads(out)
    return {s["name"]: s for s in runs[0]["services"]}


def with_knative(text, settings):
    """The services file with each named service's `knative` key set (right after its [[service]] line)."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        if line.strip() == "[[service]]":
            # The name comes within the table; find it before inserting.
            j = i + 1
            name = None
            while j < len(lines) and not lines[j].strip().startswith("[["):
                m = re.match(r'\s*name\s*=\s*"([^"]+)"', lines[j])
                if m:
                    name = m.group(1)
                    break
                j += 1
            if name in settings:
                out.append(f'knative = "{settings[name]}"')
        i += 1
    return "\n".join(out) + "\n"


def share(s):
    return s["within_slo"] / s["requests"] if s["requests"] else 1.0


def main():
    allotctl, pool, services, out = sys.argv[1:5]
    text = open(services).read()
    # Drop any knative keys already there: the grid sets them.
    text = "\n".join(l for l in text.splitlines() if not re.match(r"\s*knative\s*=", l)) + "\n"
    parsed = tomllib.loads(text)
    concurrency = {s["name"]: s["replica"][0]["concurrency"] for s in parsed["service"]}
    scratch = out + ".scratch.toml"
    # The scratch services file goes however the search ends.
    try:
        allot = simulate(allotctl, pool, text, "allot", scratch)
        results = {name: [] for name in concurrency}
        for target, delay, (window, panic) in itertools.product(TARGETS, DELAYS, WINDOWS):
            settings = {
                name: f"target={round(target * c, 3)},down-delay={delay},window={window},panic-window={panic}"
                for name, c in concurrency.items()
            }
            figures = simulate(allotctl, pool, with_knative(text, settings), "knative", scratch)
            for name, s in figures.items():
                results[name].append((settings[name], share(s), s["replica_hours"]))
    finally:
        if os.path.exists(scratch):
            os.remove(scratch)
    chosen = {}
    for name, rows in results.items():
        goal = share(allot[name])
        meeting = [r for r in rows if r[1] >= goal - 1e-9]
        best = min(meeting, key=lambda r: r[2]) if meeting else max(rows, key=lambda r: (r[1], -r[2]))
        chosen[name] = best[0]
        print(
            f"{name}: allot {goal:.1%} in time, {allot[name]['replica_hours']:.1f} replica-hours; Knative tuned "
            f"({best[0]}) {best[1]:.1%}, {best[2]:.1f}" + ("" if meeting else " (no setting reaches allot's share)"),
            file=sys.stderr,
        )
    with open(out, "w") as f:
        f.write(with_knative(text, chosen))


if __name__ == "__main__":
    main()
