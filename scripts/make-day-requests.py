#!/usr/bin/env python3
"""A day of an inference service's requests, from an hour of Azure's LLM inference trace 2023 and the daily
pattern of a production inference service.

Azure's public 2023 traces hold one hour each (code: 57 minutes, conversation: 60). A service's replica-hours
are decided over days: the load follows the users' day. This builds 24 hours of requests in which

- the requests themselves (arrival times within the minute, prompt and output tokens) are Azure's: minute t of
  the day replays minute t mod M of the hour (M: the hour's whole minutes), so its bursts stay as they were;
- the rate follows the hour-of-day profile of Alibaba's GenAI serving trace (cluster-trace-v2026-GenAI,
  `lora_request_trace.csv`: 26,823 requests over 24 days), counted per hour of day and interpolated between
  the hours' middles. The busiest hour of the day runs at Azure's rate; every other minute keeps each of its
  requests with probability profile(t) / max(profile). Nothing is ever added: a day has at most 24 times the
  hour's requests.

`--swing S` (0..1, default 1) blends the profile with a flat day: rate = 1 - S + S * profile / max. S = 1 is
the measured day (busiest hour 3.4 times the mean hour, quiet hours near nothing), S = 0 the hour's rate all
day long, as a service that never sleeps.

Output: CSV `time,context_tokens,generated_tokens`, time in seconds from the day's start. Seeded: the same
arguments give the same file.

Usage: scripts/make-day-requests.py AZURE.csv LORA_TRACE.csv OUT.csv [--swing 1] [--seed 1] [--hours 24]
"""
import argparse
import csv
import datetime
import random


def azure_minutes(path):
    """Requests of the hour by whole minute from its first request: [(offset in the minute, context, generated)]."""
    rows = []
    with open(path) as f:
        for r in csv.DictReader(f):
            t = datetime.datetime.fromisoformat(r["TIMESTAMP"][:26])
            rows.append((t.timestamp(), int(r["ContextTokens"]), int(r["GeneratedTokens"])))
    rows.sort()
    t0 = rows[0][0]
    minutes = int((rows[-1][0] - t0) // 60)  # whole minutes only: the last, partial one is dropped
    out = [[] for _ in range(minutes)]
    for t, c, g in rows:
        k = int((t - t0) // 60)
        if k < minutes:
            out[k].append((t - t0 - 60 * k, c, g))
    return out


def hour_profile(path):
    """Requests per hour of day over the whole trace, in the trace's clock."""
    counts = [0] * 24
    with open(path) as f:
        for r in csv.DictReader(f):
            counts[datetime.datetime.fromisoformat(r["gmt_create"][:19]).hour] += 1
    return counts


def minute_rate(profile, minute, swing):
    """The profile at a minute of the day, interpolated between the hours' middles, as a share of its peak."""
    x = (minute + 0.5) / 60 - 0.5
    h = int(x // 1) % 24
    w = x - (x // 1)
    v = profile[h] * (1 - w) + profile[(h + 1) % 24] * w
    return 1 - swing + swing * v / max(profile)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("azure")
    ap.add_argument("lora_trace")
    ap.add_argument("out")
    ap.add_argument("--swing", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hours", type=int, default=24)
    a = ap.parse_args()
    if not 0 <= a.swing <= 1:
        ap.error("--swing must be between 0 and 1")
    rng = random.Random(a.seed)
    hour = azure_minutes(a.azure)
    profile = hour_profile(a.lora_trace)
    # The profile's peak as a rate over whole minutes (the interpolated curve peaks below the busiest hour).
    peak = max(minute_rate(profile, m, 1) for m in range(1440))
    kept = 0
    with open(a.out, "w") as f:
        f.write("time,context_tokens,generated_tokens\n")
        for m in range(a.hours * 60):
            p = min(1.0, minute_rate(profile, m % 1440, a.swing) / (1 - a.swing + a.swing * peak))
            for offset, c, g in hour[m % len(hour)]:
                if rng.random() < p:
                    f.write(f"{60 * m + offset:.3f},{c},{g}\n")
                    kept += 1
    total = sum(len(x) for x in hour) * a.hours * 60 / len(hour)
    print(f"{a.out}: {kept} requests over {a.hours} h ({kept / total:.0%} of the hour's rate all day)")


if __name__ == "__main__":
    main()
