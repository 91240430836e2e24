#!/usr/bin/env python3
"""Scrapes a Prometheus endpoint and parses it with prometheus_client's own parser (as Prometheus
would reject what it cannot parse). Prints one JSON object: {"families": {name: type}, "samples":
[[name, labels, value], ...]}. Exit 3 when prometheus_client is missing."""
import json
import sys
import urllib.request

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    print("prometheus_client is not installed (pip install prometheus_client)", file=sys.stderr)
    sys.exit(3)

with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    content_type = r.headers.get("Content-Type", "")
    text = r.read().decode()
families = {}
samples = []
for family in text_string_to_metric_families(text):
    families[family.name] = family.type
    for s in family.samples:
        samples.append([s.name, s.labels, s.value])
print(json.dumps({"content_type": content_type, "families": families, "samples": samples}))
