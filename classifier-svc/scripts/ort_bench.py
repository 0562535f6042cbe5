#!/usr/bin/env python3
"""ONNX Runtime (CPU) baseline for `classifier-svc bench`: same model, inputs, work and output.

The measurement mirrors classifier-svc/src/bench.rs step for step:

* throughput (default): per batch size, the texts "<text> (i)", tokenized one by one with the
  model's tokenizer.json (padding off, truncation at 128, as classifier-svc/src/tokenize.rs),
  right-padded to the longest; one warm-up batch, then tokenize + forward + pooling for at
  least 3 batches and --seconds;
* --seq N instead: fixed-shape batches cut from classifier-svc/benches/prompts.txt (text i is
  every prompt from the i-th on, cut to N-1 tokens plus the final [SEP]); first pass reported
  apart, 3 warm-up passes, then at least 5 timed passes and --seconds;
* latency (--runs, 0 skips): 5 warm-up calls, then --runs single-text calls of tokenize +
  forward + mean pooling + L2 normalisation (the ONNX graph does the pooling and the norm).

The model is the graph from minilm_onnx.py. Session: intra-op threads --threads (default: the
CPUs in this process's affinity mask, e.g. under taskset), one inter-op thread, sequential
execution, all graph optimizations. One JSON line per measurement, in the shape of the Rust
bench's output, with "backend" and "threads" added to "run".

    taskset -c 0 python3 classifier-svc/scripts/ort_bench.py --onnx models/all-MiniLM-L6-v2-onnx/model-opt.onnx
"""

import argparse
import json
import os
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPTS = os.path.join(HERE, "..", "benches", "prompts.txt")

# classifier-svc/src/bench.rs PROMPT_64, verbatim.
PROMPT_64 = (
    "I am preparing for an exam in calculus and I keep getting stuck on "
    "integration by parts. Could you explain step by step how to compute the integral of x squared "
    "times e to the x, and also tell me how to check the answer by differentiating it again?"
)


def percentile(sorted_ms, p):
    return sorted_ms[int(round((len(sorted_ms) - 1) * p))]


class Model:
    def __init__(self, onnx_path, tokenizer_path, max_len, threads):
        self.tok = Tokenizer.from_file(tokenizer_path)
        file_max = (self.tok.truncation or {}).get("max_length")
        self.max_len = min(max_len or file_max or 512, 512)
        self.tok.no_padding()
        self.tok.enable_truncation(self.max_len)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])

    def tokenize(self, texts):
        # One text at a time, as the Rust tokenizer wrapper does (no parallel batch encoding).
        return [self.tok.encode(t).ids for t in texts]

    def embed_batch(self, enc):
        s = max(max(len(e) for e in enc), 1)
        ids = np.zeros((len(enc), s), np.int64)
        mask = np.zeros((len(enc), s), np.int64)
        for n, e in enumerate(enc):
            ids[n, : len(e)] = e
            mask[n, : max(len(e), 1)] = 1
        return self.sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]

    def embed(self, texts):
        return self.embed_batch(self.tokenize(texts))


def latency(model, text, runs):
    tokens = len(model.tokenize([text])[0])
    for _ in range(5):
        model.embed([text])
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        model.embed([text])
        times.append((time.perf_counter() - t) * 1e3)
    mean = sum(times) / len(times)
    times.sort()
    return {"tokens": tokens, "runs": runs, "p50_ms": percentile(times, 0.5), "p90_ms": percentile(times, 0.9),
            "p99_ms": percentile(times, 0.99), "mean_ms": mean}


def throughput(model, text, batch_size, budget):
    texts = [f"{text} ({i})" for i in range(batch_size)]
    model.embed_batch(model.tokenize(texts))
    start = time.perf_counter()
    batches = 0
    while batches < 3 or time.perf_counter() - start < budget:
        model.embed_batch(model.tokenize(texts))
        batches += 1
    secs = time.perf_counter() - start
    return {"batch_size": batch_size, "batches": batches, "texts_per_sec": batches * batch_size / secs,
            "ms_per_batch": secs * 1e3 / batches}


def fixed_batch(model, batch_size, seq_len):
    with open(PROMPTS, encoding="utf-8") as f:
        p = [line.strip() for line in f if line.strip()]
    texts = [" ".join(p[(i + k) % len(p)] for k in range(len(p))) for i in range(batch_size)]
    enc = model.tokenize(texts)
    for e in enc:
        if len(e) < seq_len:
            raise SystemExit(f"seq_len {seq_len} exceeds the model's maximum length {len(e)}")
        last = e[-1]
        del e[seq_len - 1:]
        e.append(last)
    return enc


def fixed_shape(model, batch_size, seq_len, budget):
    enc = fixed_batch(model, batch_size, seq_len)
    t = time.perf_counter()
    first = model.embed_batch(enc)
    first_ms = (time.perf_counter() - t) * 1e3
    for _ in range(3):
        model.embed_batch(enc)
    times = []
    start = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < budget:
        t = time.perf_counter()
        model.embed_batch(enc)
        times.append((time.perf_counter() - t) * 1e3)
    mean = sum(times) / len(times)
    n = len(times)
    times.sort()
    return {"batch_size": batch_size, "seq_len": seq_len, "first_ms": first_ms, "batches": n,
            "p50_ms": percentile(times, 0.5), "mean_ms": mean, "texts_per_sec": batch_size * 1e3 / mean,
            "head": [float(x) for x in first[0][:4]]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--onnx", default="models/all-MiniLM-L6-v2-onnx/model-opt.onnx")
    ap.add_argument("--tokenizer", default="models/all-MiniLM-L6-v2/tokenizer.json")
    ap.add_argument("--max-len", type=int, default=128, help="truncation length (bert_model.max_seq_len)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="intra-op threads (default: CPUs in the affinity mask)")
    ap.add_argument("--runs", type=int, default=200, help="runs for the latency measurement (0 skips it)")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per batch size")
    ap.add_argument("--text", default=None, help="prompt to measure (default: the ~64-token prompt)")
    ap.add_argument("--batches", default="1,8,32", help="batch sizes for the throughput measurement")
    ap.add_argument("--seq", type=int, default=None, help="fixed sequence length (real prompts, no padding)")
    args = ap.parse_args()

    t = time.perf_counter()
    model = Model(args.onnx, args.tokenizer, args.max_len, args.threads)
    tag = {"device": "cpu", "dtype": "f32", "backend": "onnxruntime", "onnx": os.path.basename(args.onnx),
           "threads": args.threads, "ort": ort.__version__}
    print(json.dumps({"load_ms": (time.perf_counter() - t) * 1e3, "run": tag}), flush=True)
    text = args.text or PROMPT_64
    batches = [int(b) for b in args.batches.split(",") if b]
    for b in batches:
        if args.seq:
            print(json.dumps({"shape": fixed_shape(model, b, args.seq, args.seconds), "run": tag}), flush=True)
        else:
            print(json.dumps({"throughput": throughput(model, text, b, args.seconds), "run": tag}), flush=True)
    if args.runs > 0:
        print(json.dumps({"latency": latency(model, text, args.runs), "run": tag}), flush=True)


if __name__ == "__main__":
    main()
