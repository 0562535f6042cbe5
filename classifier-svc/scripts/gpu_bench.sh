#!/usr/bin/env bash
# The classifier's GPU measurements in one go, from the repository root of a CUDA machine:
#   1. burn (CUDA) throughput per batch size at a fixed sequence length, f32 / f16 / bf16;
#   2. PyTorch/transformers on the same model and inputs, fp32 / bf16, eager and compiled
#      (torch.compile reduce-overhead: CUDA graphs);
#   3. cold start to SERVING with an empty kernel cache, then again with the cache it left;
#   4. gRPC latency under open-loop load (the warm server): maximum throughput (closed loop),
#      then fixed rates at fractions of it.
#
#   classifier-svc/scripts/gpu_bench.sh BIN MODEL_DIR OUT_DIR
#
# BIN: a `--features cuda` build of classifier-svc. Results: OUT_DIR/bench.jsonl (one JSON
# object per line) and the two servers' logs. Knobs: BATCHES, SEQ, BENCH_SECONDS, LOAD_SECONDS,
# FRACTIONS, CONCURRENCY, DTYPES (burn), TORCH_DTYPES, TORCH_MODES, CONFIG (router config).
set -uo pipefail

BIN=${1:?BIN}
MODEL=${2:?MODEL_DIR}
OUT=${3:?OUT_DIR}
BATCHES=${BATCHES:-1,8,16,32,64}
SEQ=${SEQ:-128}
SECONDS_PER=${BENCH_SECONDS:-2}
LOAD_SECONDS=${LOAD_SECONDS:-10}
FRACTIONS=${FRACTIONS:-0.25,0.5,0.75}
DTYPES=${DTYPES:-f32 f16 bf16}
TORCH_DTYPES=${TORCH_DTYPES:-fp32,bf16}
TORCH_MODES=${TORCH_MODES:-eager,compiled}
CONFIG=${CONFIG:-classifier-svc/config/router.yaml}
KC=$(mktemp -d)
mkdir -p "$OUT"
J=$OUT/bench.jsonl
export NO_COLOR=1 SR__BERT_MODEL__MODEL_ID=$MODEL SR_CUBECL_CONFIG=classifier-svc/config/cubecl.toml
PORT=50951

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

echo "== burn: $BATCHES x $SEQ, $DTYPES"
for dt in $DTYPES; do
    SR_KERNEL_CACHE=$KC/bench-$dt timeout 240 "$BIN" bench --config "$CONFIG" --device cuda --dtype "$dt" \
        --batches "$BATCHES" --seq "$SEQ" --seconds "$SECONDS_PER" --runs 200 | tee -a "$J" \
        || echo "{\"failed\": \"burn $dt\"}" | tee -a "$J"
done

echo "== torch: $BATCHES x $SEQ, $TORCH_DTYPES, $TORCH_MODES"
PYTHONUNBUFFERED=1 timeout 480 python3 classifier-svc/scripts/torch_bench.py --model "$MODEL" \
    --batches "$BATCHES" --seq "$SEQ" --dtypes "$TORCH_DTYPES" --modes "$TORCH_MODES" --seconds "$SECONDS_PER" | tee -a "$J"

# Starts the server with kernel cache $1, log $2; sets SERVER (pid) and STARTUP (seconds to
# SERVING, or null).
start_server() {
    local t0 t1
    t0=$(date +%s.%N)
    SR_KERNEL_CACHE=$1 "$BIN" serve --config "$CONFIG" --device cuda --listen 127.0.0.1:$PORT \
        --metrics-listen "" >/dev/null 2>"$2" &
    SERVER=$!
    STARTUP=null
    until grep -q "classifier-svc SERVING" "$2"; do
        kill -0 $SERVER 2>/dev/null || { echo "server exited" >&2; return 1; }
        sleep 0.02
    done
    t1=$(date +%s.%N)
    STARTUP=$(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }")
}

echo "== cold start"
start_server "$KC/serve" "$OUT/serve_cold.log"
cold=$STARTUP
kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null
start_server "$KC/serve" "$OUT/serve_warm.log"
warm=$STARTUP
echo "{\"cold_start_s\": {\"empty_cache\": $cold, \"persisted_cache\": $warm}}" | tee -a "$J"
grep -h "warm-up done" "$OUT"/serve_cold.log "$OUT"/serve_warm.log

echo "== load"
timeout 200 "$BIN" loadgen --addr http://127.0.0.1:$PORT --seconds "$LOAD_SECONDS" \
    --fractions "$FRACTIONS" --concurrency "${CONCURRENCY:-128}" | tee -a "$J"
kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null
du -sh "$KC"/* 2>/dev/null
echo "== done"
