#!/usr/bin/env python3
"""Build examples/requests-code.csv: the requests of Azure's LLM inference trace 2023, code completion
(github.com/Azure/AzurePublicDataset, CC-BY 4.0), one hour, as seconds from the first request.

Needs ../shared/data/traces (not needed by tests or the demo, which use the committed CSV).

    python3 scripts/make-example-requests.py [--traces DIR] [--out examples/requests-code.csv]
"""
import argparse, csv, os
from datetime import datetime

p = argparse.ArgumentParser()
p.add_argument("--traces", default=os.path.join(os.path.dirname(__file__), "../../shared/data/traces"))
p.add_argument("--out", default="examples/requests-code.csv")
a = p.parse_args()
src = os.path.join(a.traces, "azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv")
rows = []
with open(src) as f:
    for r in csv.DictReader(f):
        t = datetime.strptime(r["TIMESTAMP"][:26], "%Y-%m-%d %H:%M:%S.%f")
        rows.append((t, int(r["ContextTokens"]), int(r["GeneratedTokens"])))
rows.sort()
first = rows[0][0]
with open(a.out, "w") as f:
    f.write("time,context_tokens,generated_tokens\n")
    for t, c, g in rows:
        f.write(f"{(t - first).total_seconds():.3f},{c},{g}\n")
print(f"{len(rows)} requests over {(rows[-1][0] - first).total_seconds() / 60:.1f} minutes -> {a.out}")
