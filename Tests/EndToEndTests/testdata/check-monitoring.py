#!/usr/bin/env python3
"""Checks that every metric and label the Grafana dashboard and the Prometheus rules in contrib/ use is in a
real scrape of allotd. Usage: check-monitoring.py SCRAPE.json FILE...; SCRAPE.json as scrape-metrics.py
prints it. Prints one problem per line and exits 1 if there is any."""
import json, re, sys

scrape = json.load(open(sys.argv[1]))
labels_of = {}
for name, labels, _ in scrape["samples"]:
    labels_of.setdefault(name, set()).update(labels)
# Labels Prometheus adds itself, and the histogram bucket bound.
added = {"job", "instance"}
problems, exprs = [], []
for path in sys.argv[2:]:
    text = open(path).read()
    if path.endswith(".json"):
        def walk(o):
            if isinstance(o, dict):
                for k, v in o.items():
                    if k == "expr":
                        exprs.append((path, v))
                    walk(v)
            elif isinstance(o, list):
                for v in o:
                    walk(v)
        walk(json.loads(text))
    else:
        # expr: one line, or a block (`expr: |` and the lines indented under it).
        lines = text.split("\n")
        for i, line in enumerate(lines):
            m = re.match(r"^(\s*)expr:\s*(.*)$", line)
            if not m:
                continue
            if m.group(2).strip() in ("|", ">"):
                block, indent = [], len(m.group(1))
                for nxt in lines[i + 1:]:
                    if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                        break
                    block.append(nxt)
                exprs.append((path, "\n".join(block)))
            else:
                exprs.append((path, m.group(2)))
metric_re = re.compile(r"\b(allot_[a-z_]+)(\{([^}]*)\})?")
used_metrics = 0
for path, e in exprs:
    metrics = []
    for m in metric_re.finditer(e):
        name, selector = m.group(1), m.group(3) or ""
        used_metrics += 1
        metrics.append(name)
        if name not in labels_of:
            problems.append(f"{path}: {name} is not in the scrape ({e!r})")
            continue
        for lab in re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", selector):
            if lab not in added and lab not in labels_of[name]:
                problems.append(f"{path}: {name} has no label {lab!r}")
    for group in re.findall(r"\b(?:by|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", e):
        for lab in [x.strip() for x in group.split(",") if x.strip()]:
            if lab in added or lab == "le":
                continue
            if not any(lab in labels_of.get(n, set()) for n in metrics):
                problems.append(f"{path}: label {lab!r} of by/on is on none of {metrics}")
for p in problems:
    print(p)
print(f"checked {len(exprs)} expressions, {used_metrics} metric references", file=sys.stderr)
sys.exit(1 if problems or not exprs else 0)
