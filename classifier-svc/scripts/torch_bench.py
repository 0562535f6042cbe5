#!/usr/bin/env python3
"""PyTorch/transformers baselines for the classifier's embedding model: eager, and compiled.

Same model directory, same inputs and same work as `classifier-svc bench --seq N`: every text
is every prompt of classifier-svc/benches/prompts.txt from the i-th on, joined by spaces,
truncated to exactly N tokens (no padding); one timed pass uploads the ids, runs the encoder,
mean-pools, L2-normalises and copies the vectors back to the host.

`compiled` is what a PyTorch user would deploy for speed: the encoder, pooling and
normalisation under `torch.compile(mode="reduce-overhead")`, which fuses element-wise work with
Inductor and replays each shape as one CUDA graph (one compile per batch size, timed apart as
`first_ms`).

    python3 classifier-svc/scripts/torch_bench.py --model models/all-MiniLM-L6-v2 \
        --batches 1,8,16,32,64 --seq 128 --dtypes fp32,bf16 --modes eager,compiled --seconds 3

Prints one JSON line per (dtype, batch size).
"""

import argparse
import json
import os
import statistics
import time

import torch
from transformers import AutoModel, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPTS = os.path.join(HERE, "..", "benches", "prompts.txt")


def texts(batch_size):
    with open(PROMPTS, encoding="utf-8") as f:
        p = [line.strip() for line in f if line.strip()]
    return [" ".join(p[(i + k) % len(p)] for k in range(len(p))) for i in range(batch_size)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/all-MiniLM-L6-v2")
    ap.add_argument("--batches", default="1,8,16,32,64")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--modes", default="eager,compiled")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    dev = torch.device(args.device)
    tok = AutoTokenizer.from_pretrained(args.model)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for name in args.dtypes.split(","):
        model = AutoModel.from_pretrained(args.model, torch_dtype=dtypes[name]).to(dev).eval()

        def pooled(ids, mask):
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return torch.nn.functional.normalize(((hidden * m).sum(1) / m.sum(1)).float(), dim=-1)

        for mode in args.modes.split(","):
            if mode == "eager":
                forward = pooled
            elif mode == "compiled":
                torch._dynamo.reset()
                # One graph per batch size: shapes are static, as the benchmark's are.
                forward = torch.compile(pooled, mode="reduce-overhead", dynamic=False)
            else:
                raise SystemExit(f"unknown mode {mode!r} (eager, compiled)")

            @torch.inference_mode()
            def embed(ids, mask):
                ids, mask = ids.to(dev, non_blocking=True), mask.to(dev, non_blocking=True)
                if mode == "compiled" and dev.type == "cuda":
                    # The graph's output buffer is reused by the next replay; .cpu() copies it first.
                    torch.compiler.cudagraph_mark_step_begin()
                return forward(ids, mask).cpu()

            for b in [int(x) for x in args.batches.split(",")]:
                run(embed, tok, b, args, name, mode, dev)
        del model
        sync()


def run(embed, tok, b, args, dtype, mode, dev):
    enc = tok(texts(b), truncation=True, max_length=args.seq, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert ids.shape == (b, args.seq), ids.shape
    t = time.perf_counter()
    first = embed(ids, mask)
    first_ms = (time.perf_counter() - t) * 1e3
    for _ in range(3):
        embed(ids, mask)
    times = []
    start = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < args.seconds:
        t = time.perf_counter()
        embed(ids, mask)  # .cpu() synchronises
        times.append((time.perf_counter() - t) * 1e3)
    mean = sum(times) / len(times)
    print(json.dumps({
        "torch": {
            "dtype": dtype,
            "mode": mode,
            "batch_size": b,
            "seq_len": args.seq,
            "first_ms": round(first_ms, 3),
            "batches": len(times),
            "p50_ms": round(statistics.median(times), 4),
            "mean_ms": round(mean, 4),
            "texts_per_sec": round(b * 1e3 / mean, 1),
            "head": [round(x, 5) for x in first[0, :4].tolist()],
        },
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
        "torch_version": torch.__version__,
    }), flush=True)

if __name__ == "__main__":
    main()
