#!/usr/bin/env python3
"""Markdown table of `classifier-svc bench` (burn) vs ort_bench.py (ONNX Runtime) outputs.

Each argument is BACKEND:THREADS=FILE, FILE holding the JSON lines of one run; a key given more
than once (several rounds) is reduced to the median of each number. Backends named "burn" are
compared with the one named "ort" at the same thread count: the ratio row is burn's time over
ONNX Runtime's (p50/p99: latency ratio; texts/s columns: ORT texts/s over burn texts/s), so
above 1 means burn is slower.

    python3 classifier-svc/scripts/bench_table.py burn:1=b1.jsonl ort:1=o1.jsonl ...
"""

import json
import statistics
import sys
from collections import defaultdict

LATENCY_GOAL_MS = 10.0
RATIO_GOAL = 1.5


def parse(path):
    lat, tput, meta = None, {}, {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            d = json.loads(line)
            meta.update(d.get("run", {}))
            if "latency" in d:
                lat = d["latency"]
            if "throughput" in d:
                tput[d["throughput"]["batch_size"]] = d["throughput"]["texts_per_sec"]
    return lat, tput, meta


def main():
    runs = defaultdict(list)
    for arg in sys.argv[1:]:
        key, path = arg.split("=", 1)
        backend, threads = key.split(":")
        runs[(backend, int(threads))].append(parse(path))
    if not runs:
        sys.exit(__doc__)

    rows = {}
    batches = sorted({b for rs in runs.values() for _, t, _ in rs for b in t})
    for key, rs in runs.items():
        med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
        rows[key] = {
            "p50": med([r[0]["p50_ms"] for r in rs if r[0]]),
            "p99": med([r[0]["p99_ms"] for r in rs if r[0]]),
            "tokens": next((r[0]["tokens"] for r in rs if r[0]), "?"),
            "tput": {b: med([r[1][b] for r in rs if b in r[1]]) for b in batches},
            "meta": rs[0][2],
            "rounds": len(rs),
        }

    def name(backend, meta):
        if backend == "burn":
            return "burn (flex, CPU)"
        if backend == "ort":
            return f"ONNX Runtime {meta.get('ort', '')} ({meta.get('onnx', '?')})".replace("  ", " ")
        return backend

    head = ["backend", "threads", "p50 ms", "p99 ms"] + [f"texts/s b={b}" for b in batches]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|")
    fmt = lambda x: "n/a" if x != x else f"{x:.1f}"  # noqa: E731
    for threads in sorted({t for _, t in rows}):
        for backend in sorted({b for b, t in rows if t == threads}):
            r = rows[(backend, threads)]
            cells = [name(backend, r["meta"]), str(threads), fmt(r["p50"]), fmt(r["p99"])]
            cells += [fmt(r["tput"][b]) for b in batches]
            print("| " + " | ".join(cells) + " |")
        burn, ort = rows.get(("burn", threads)), rows.get(("ort", threads))
        if burn and ort:
            ratio = lambda a, b: "n/a" if not (a == a and b == b and b) else f"{a / b:.2f}×"  # noqa: E731
            cells = ["**burn / ORT** (time)", str(threads), ratio(burn["p50"], ort["p50"]), ratio(burn["p99"], ort["p99"])]
            cells += [ratio(ort["tput"][b], burn["tput"][b]) for b in batches]
            print("| " + " | ".join(cells) + " |")

    tokens = next(iter(rows.values()))["tokens"]
    n = max(r["rounds"] for r in rows.values())
    print()
    print(f"Latency: one {tokens}-token prompt (PROMPT_64), tokenize + forward + mean pool + L2 norm; "
          f"throughput: PROMPT_64 variants padded to the longest. Median of {n} round(s). "
          f"Goal: burn p50 ≤ {LATENCY_GOAL_MS:g} ms and ≤ {RATIO_GOAL:g}× ORT.")
    for threads in sorted({t for _, t in rows}):
        burn, ort = rows.get(("burn", threads)), rows.get(("ort", threads))
        if burn and ort and burn["p50"] == burn["p50"] and ort["p50"] == ort["p50"]:
            ok_abs = burn["p50"] <= LATENCY_GOAL_MS
            ok_rel = burn["p50"] <= RATIO_GOAL * ort["p50"]
            print(f"- {threads} thread(s): p50 {burn['p50']:.1f} ms {'meets' if ok_abs else 'misses'} the "
                  f"{LATENCY_GOAL_MS:g} ms goal; {burn['p50'] / ort['p50']:.2f}× ORT "
                  f"{'meets' if ok_rel else 'misses'} the {RATIO_GOAL:g}× goal.")


if __name__ == "__main__":
    main()
