"""A model directory Dynamo's mocker can serve, from MiniLM's tokenizer (`just dynamo`).

Dynamo's frontend refuses a model without a chat template or an end-of-sequence id, and the
mocker answers with random tokens, so any tokenizer will do; the router's own MiniLM is already
here. Usage: dynamo_model_dir.py MINILM_DIR OUT_DIR (idempotent; writes OUT_DIR atomically).
"""

import json
import os
import shutil
import sys

# Renders every turn as "role: text"; list contents (text parts) are joined.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: "
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for p in m['content'] %}{{ p['text'] }}{% endfor %}{% endif %}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


def main(src: str, dst: str) -> None:
    if os.path.exists(os.path.join(dst, "generation_config.json")):
        return
    tmp = dst + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with open(os.path.join(src, "tokenizer.json"), encoding="utf-8") as f:
        tokenizer = json.load(f)
    # Serving tokenizes whole prompts: no truncation to MiniLM's length, no padding.
    tokenizer["truncation"] = None
    tokenizer["padding"] = None
    with open(os.path.join(tmp, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer, f)
    for name in ["vocab.txt", "special_tokens_map.json"]:
        shutil.copy(os.path.join(src, name), tmp)
    with open(os.path.join(src, "vocab.txt"), encoding="utf-8") as f:
        vocab = f.read().split("\n")
    bos, eos = vocab.index("[CLS]"), vocab.index("[SEP]")
    with open(os.path.join(src, "tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    config.update(bos_token="[CLS]", eos_token="[SEP]", chat_template=CHAT_TEMPLATE)
    with open(os.path.join(tmp, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)
    with open(os.path.join(src, "config.json"), encoding="utf-8") as f:
        model = json.load(f)
    model.update(bos_token_id=bos, eos_token_id=eos)
    with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
        json.dump(model, f, indent=1)
    with open(os.path.join(tmp, "generation_config.json"), "w", encoding="utf-8") as f:
        json.dump({"bos_token_id": bos, "eos_token_id": eos}, f)
    shutil.rmtree(dst, ignore_errors=True)
    os.rename(tmp, dst)
    print(f"dynamo: mocker model directory {dst}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
