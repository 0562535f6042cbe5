#!/usr/bin/env python3
"""Plots of `router-train eval` results: reads router-train/eval.json, writes PNGs next to it.

    python3 router-train/plot_eval.py [path/to/eval.json]

Writes confusion-peer.png and confusion-val.png (category head: colour is the row-normalised
share of each true category, cell text the raw count) and, where eval.json has a
`jailbreak.curve` (points with threshold, val_recall, val_fpr, peer_recall, peer_domain_fpr), jailbreak-tradeoff.png;
where it has `dev` (the chat-style development sets), confusion-dev.png and guard-dev-tradeoff.png.
Needs matplotlib (`just eval` installs it into .venv).
"""

import io
import json
import sys
from pathlib import Path

import matplotlib
from PIL import Image  # a matplotlib dependency

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 100


def save(fig, out):
    """PNG with a 128-colour palette: a quarter of the size, the same look for flat plots."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    buf.seek(0)
    Image.open(buf).convert("RGB").quantize(colors=128).save(out, optimize=True)
    print(f"[plot] wrote {out}")


def confusion(labels, result, title, out):
    m = result["matrix"]
    n = len(labels)
    norm = [[v / s if (s := sum(row)) else 0.0 for v in row] for row in m]
    fig, ax = plt.subplots(figsize=(8.5, 7.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(n):
        for j in range(n):
            v = m[i][j]
            if v == 0:
                continue
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                    color="white" if norm[i][j] > 0.5 else "black",
                    fontweight="bold" if i == j else "normal")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("predicted category")
    ax.set_ylabel("true category")
    ax.set_title(f"{title}\naccuracy {100 * result['accuracy']:.1f}%, "
                 f"macro-F1 {result['macro_f1']:.3f}, n = {result['n']}", fontsize=10)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("share of the true category (row-normalised)", fontsize=8)
    fig.tight_layout()
    save(fig, out)


def tradeoff(jb, out):
    pts = sorted(jb["curve"], key=lambda p: p["threshold"])
    fig, ax = plt.subplots(figsize=(6, 5))
    for recall, fpr, label in [("val_recall", "val_fpr", "validation split"),
                               ("peer_recall", "peer_domain_fpr", "peer (jailbreak cases / domain questions)")]:
        ax.plot([p[fpr] for p in pts], [p[recall] for p in pts], marker=".", label=label)
        for p in pts:
            ax.annotate(f"{p['threshold']:g}", (p[fpr], p[recall]), fontsize=6,
                        textcoords="offset points", xytext=(3, -8))
    thr = jb.get("threshold")
    op = jb.get("val")
    if op is not None and "false_positive_rate" in op:
        ax.scatter([op["false_positive_rate"]], [op["recall"]], color="red", zorder=3,
                   label=f"operating point on val (threshold {thr})")
    ax.set_xlabel("false-positive rate (benign flagged)")
    ax.set_ylabel("recall (jailbreaks flagged)")
    ax.set_xlim(0, max(0.3, max(max(p["val_fpr"], p["peer_domain_fpr"]) for p in pts) + 0.02))
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Jailbreak head: recall vs false-positive rate by threshold", fontsize=10)
    fig.tight_layout()
    save(fig, out)


def guard_dev(g, out):
    """Blocked benign look-alikes vs recall on our jailbreaks and the peer's, by threshold."""
    pts = sorted(g["curve"], key=lambda p: p["threshold"])
    fig, ax = plt.subplots(figsize=(6, 5))
    for recall, label in [("recall", "our jailbreak dev set"), ("peer_recall", "peer jailbreak cases")]:
        ax.plot([p["benign_blocked"] for p in pts], [p[recall] for p in pts], marker=".", label=label)
        for p in pts:
            ax.annotate(f"{p['threshold']:g}", (p["benign_blocked"], p[recall]), fontsize=6,
                        textcoords="offset points", xytext=(3, -8))
    ax.scatter([g["benign_blocked"]], [g["recall"]], color="red", zorder=3,
               label=f"operating point (threshold {g['threshold']:.2f})")
    ax.axvline(0.02, color="grey", linestyle=":", label="target: 2% benign blocked")
    ax.set_xlabel("benign look-alikes blocked")
    ax.set_ylabel("recall (jailbreaks blocked)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Jailbreak guard on the development sets, by threshold", fontsize=10)
    fig.tight_layout()
    save(fig, out)


def main():
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "eval.json"
    d = json.loads(src.read_text())
    cat = d["category"]
    labels = cat["labels"]
    out_dir = src.parent
    confusion(labels, cat["peer"], "Category head, peer cases", out_dir / "confusion-peer.png")
    confusion(labels, cat["val"], "Category head, validation split", out_dir / "confusion-val.png")
    if cat.get("finetuned_peer"):
        confusion(labels, cat["finetuned_peer"], "Fine-tuned encoder, peer cases",
                  out_dir / "confusion-peer-finetuned.png")
    dev = d.get("dev")
    if dev:
        confusion(dev["labels"], dev["chat"], "Category head, chat-style development set",
                  out_dir / "confusion-dev.png")
        guard_dev(dev["guard"], out_dir / "guard-dev-tradeoff.png")
    jb = d.get("jailbreak", {})
    if jb.get("curve"):
        tradeoff(jb, out_dir / "jailbreak-tradeoff.png")


if __name__ == "__main__":
    main()
