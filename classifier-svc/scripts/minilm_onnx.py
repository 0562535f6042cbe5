#!/usr/bin/env python3
"""all-MiniLM-L6-v2 as an ONNX graph, for the ONNX Runtime baseline of the CPU path.

Builds, with `onnx.helper` only (no torch), opset 17: BertModel (token type 0) + masked mean
pooling + L2 normalisation from the model's safetensors weights, i.e. the same work as the
sidecar's embedding path.

    inputs:  input_ids int64 [batch, seq], attention_mask int64 [batch, seq]
    output:  embeddings float32 [batch, 384]

The graph follows the node patterns a PyTorch export of HF BertModel has (separate Q/K/V
MatMuls, Reshape [0, 0, heads, head_dim], Div by sqrt(head_dim), additive mask
(1 - mask) * -10000, erf GELU, Slice of position_ids), so that ONNX Runtime's transformer
optimizer recognises them. Writes to --out:

    model.onnx      the plain graph (ORT still applies its own basic/extended fusions at load)
    model-opt.onnx  the same after onnxruntime.transformers.optimizer (model_type "bert"),
                    when the optimizer fused anything

and checks both against classifier-svc/fixtures/minilm/reference.json (each text alone and the
whole set as one padded batch).

    python3 classifier-svc/scripts/minilm_onnx.py --model models/all-MiniLM-L6-v2 \
        --out models/all-MiniLM-L6-v2-onnx
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "..", "fixtures", "minilm", "reference.json")
OPSET = 17


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, prefix):
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, name, value):
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type, inputs, prefix=None, **attrs):
        out = self.name(prefix or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out + "_node", **attrs))
        return out


def build(model_dir):
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    assert cfg.get("hidden_act", "gelu") == "gelu", "only erf GELU is built"
    w = load_file(os.path.join(model_dir, "model.safetensors"))
    w = {k.removeprefix("bert."): v for k, v in w.items()}
    h, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    hd = h // nh
    eps = float(cfg.get("layer_norm_eps", 1e-12))
    max_pos = cfg["max_position_embeddings"]

    g = Graph()
    f32 = lambda x: np.asarray(x, dtype=np.float32)  # noqa: E731
    i64 = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731

    def linear(x, prefix):
        wt = g.const(prefix + ".weight_t", f32(w[prefix + ".weight"].T))
        b = g.const(prefix + ".bias", f32(w[prefix + ".bias"]))
        return g.op("Add", [g.op("MatMul", [x, wt]), b])

    def layer_norm(x, prefix):
        scale = g.const(prefix + ".weight", f32(w[prefix + ".weight"]))
        bias = g.const(prefix + ".bias", f32(w[prefix + ".bias"]))
        return g.op("LayerNormalization", [x, scale, bias], axis=-1, epsilon=eps)

    # Shared constants.
    c_zero = g.const("c_i64_0", i64([0]))
    c_one = g.const("c_i64_1", i64([1]))
    c_idx1 = g.const("c_i64_scalar_1", i64(1))
    c_heads = g.const("c_shape_heads", i64([0, 0, nh, hd]))
    c_hidden = g.const("c_shape_hidden", i64([0, 0, h]))
    c_sqrt_hd = g.const("c_sqrt_head_dim", f32(math.sqrt(hd)))
    c_f1 = g.const("c_f32_1", f32(1.0))
    c_neg = g.const("c_mask_value", f32(-10000.0))
    c_sqrt2 = g.const("c_sqrt2", f32(math.sqrt(2.0)))
    c_half = g.const("c_f32_half", f32(0.5))
    c_eps_norm = g.const("c_eps_norm", f32(1e-12))

    # Embeddings: word + token type 0 + position (Slice of position_ids up to seq), LayerNorm.
    word = g.op("Gather", [g.const("embeddings.word_embeddings.weight", f32(w["embeddings.word_embeddings.weight"])), "input_ids"])
    shape_ids = g.op("Shape", ["input_ids"])
    token_type_ids = g.op("ConstantOfShape", [shape_ids], value=helper.make_tensor("zero", TensorProto.INT64, [1], [0]))
    typ = g.op("Gather", [g.const("embeddings.token_type_embeddings.weight", f32(w["embeddings.token_type_embeddings.weight"])), token_type_ids])
    seq = g.op("Gather", [shape_ids, c_idx1])
    seq_1d = g.op("Unsqueeze", [seq, c_zero])
    pos_ids = g.op("Slice", [g.const("embeddings.position_ids", i64(np.arange(max_pos)[None, :])), c_zero, seq_1d, c_one, c_one])
    pos = g.op("Gather", [g.const("embeddings.position_embeddings.weight", f32(w["embeddings.position_embeddings.weight"])), pos_ids])
    x = layer_norm(g.op("Add", [g.op("Add", [word, typ]), pos]), "embeddings.LayerNorm")

    # Additive attention mask [B, 1, 1, S]: (1 - mask) * -10000.
    m = g.op("Unsqueeze", [g.op("Unsqueeze", ["attention_mask", c_one]), g.const("c_i64_2", i64([2]))])
    m = g.op("Cast", [m], to=TensorProto.FLOAT)
    mask_bias = g.op("Mul", [g.op("Sub", [c_f1, m]), c_neg])

    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"

        def heads(t, perm):
            return g.op("Transpose", [g.op("Reshape", [t, c_heads])], perm=perm)

        q = heads(linear(x, f"{p}.attention.self.query"), [0, 2, 1, 3])
        k = heads(linear(x, f"{p}.attention.self.key"), [0, 2, 3, 1])
        v = heads(linear(x, f"{p}.attention.self.value"), [0, 2, 1, 3])
        scores = g.op("Div", [g.op("MatMul", [q, k]), c_sqrt_hd])
        probs = g.op("Softmax", [g.op("Add", [scores, mask_bias])], axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, c_hidden])
        x = layer_norm(g.op("Add", [linear(ctx, f"{p}.attention.output.dense"), x]), f"{p}.attention.output.LayerNorm")
        inter = linear(x, f"{p}.intermediate.dense")
        erf = g.op("Erf", [g.op("Div", [inter, c_sqrt2])])
        gelu = g.op("Mul", [g.op("Mul", [inter, g.op("Add", [erf, c_f1])]), c_half])
        x = layer_norm(g.op("Add", [linear(gelu, f"{p}.output.dense"), x]), f"{p}.output.LayerNorm")

    # Masked mean pooling over the sequence, then L2 normalisation.
    mf = g.op("Unsqueeze", [g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT), g.const("c_i64_m1", i64([-1]))])
    summed = g.op("ReduceSum", [g.op("Mul", [x, mf]), c_one], keepdims=0)
    count = g.op("Max", [g.op("ReduceSum", [mf, c_one], keepdims=0), c_f1])
    pooled = g.op("Div", [summed, count])
    norm = g.op("Sqrt", [g.op("ReduceSum", [g.op("Mul", [pooled, pooled]), c_one], keepdims=1)])
    emb = g.op("Div", [pooled, g.op("Max", [norm, c_eps_norm])])
    g.nodes.append(helper.make_node("Identity", [emb], ["embeddings"], name="embeddings_node"))

    graph = helper.make_graph(
        g.nodes,
        "all-MiniLM-L6-v2",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", h])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="minilm_onnx.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, cfg


def optimize(path, out, cfg):
    """ORT's transformer optimizer; returns the fused-operator counts (None if nothing fused)."""
    import logging

    from onnxruntime.transformers.optimizer import optimize_model

    # It warns that the producer is not "pytorch"; the node patterns are what matter.
    logging.getLogger("onnxruntime.transformers.optimizer").setLevel(logging.ERROR)
    opt = optimize_model(
        path,
        model_type="bert",
        num_heads=cfg["num_attention_heads"],
        hidden_size=cfg["hidden_size"],
        opt_level=0,  # the Python fusions only; ORT applies its own graph optimizations at load
    )
    stats = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    if not stats:
        return None
    opt.save_model_to_file(out)
    return stats


def session(path, threads=1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def parity(path, tokenizer_path):
    """Max abs diff vs the PyTorch reference: each text alone and all of them as one padded batch."""
    from tokenizers import Tokenizer

    with open(REFERENCE, encoding="utf-8") as f:
        ref = json.load(f)
    tok = Tokenizer.from_file(tokenizer_path)
    tok.no_padding()
    tok.enable_truncation(128)
    sess = session(path)
    cases = ref["cases"]
    ids = [tok.encode(c["text"]).ids for c in cases]
    for c, e in zip(cases, ids):
        assert e == c["input_ids"], f"token ids differ for {c['text']!r}"
    want = np.array([c["embedding"] for c in cases], dtype=np.float32)
    single = np.concatenate([
        sess.run(None, {"input_ids": np.array([e], np.int64), "attention_mask": np.ones((1, len(e)), np.int64)})[0]
        for e in ids
    ])
    s = max(len(e) for e in ids)
    batch_ids = np.zeros((len(ids), s), np.int64)
    batch_mask = np.zeros((len(ids), s), np.int64)
    for n, e in enumerate(ids):
        batch_ids[n, : len(e)] = e
        batch_mask[n, : len(e)] = 1
    batched = sess.run(None, {"input_ids": batch_ids, "attention_mask": batch_mask})[0]
    return float(np.abs(single - want).max()), float(np.abs(batched - want).max())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/all-MiniLM-L6-v2")
    ap.add_argument("--out", default="models/all-MiniLM-L6-v2-onnx")
    ap.add_argument("--no-optimize", action="store_true", help="skip the ORT transformer optimizer")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="max abs diff allowed vs the reference")
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    model, cfg = build(args.model)
    plain = os.path.join(args.out, "model.onnx")
    onnx.save(model, plain)
    print(f"wrote {plain} ({len(model.graph.node)} nodes)")
    paths = [plain]
    if not args.no_optimize:
        fused = os.path.join(args.out, "model-opt.onnx")
        stats = optimize(plain, fused, cfg)
        if stats:
            n = len(onnx.load(fused, load_external_data=False).graph.node)
            print(f"wrote {fused} ({n} nodes), fusions: {json.dumps(stats)}")
            paths.append(fused)
        else:
            print("ORT transformer optimizer fused nothing; no model-opt.onnx")
    tokenizer = os.path.join(args.model, "tokenizer.json")
    ok = True
    for p in paths:
        alone, batched = parity(p, tokenizer)
        good = max(alone, batched) <= args.tolerance
        ok &= good
        print(json.dumps({"parity": os.path.basename(p), "max_abs_diff_single": alone,
                          "max_abs_diff_batched": batched, "ok": good}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
