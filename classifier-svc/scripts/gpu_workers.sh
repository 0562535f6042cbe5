#!/usr/bin/env bash
# gRPC Classify under load on a CUDA machine with 1 and with 2 model workers
# (`batching.workers`), interleaved, from the repository root:
#
#   classifier-svc/scripts/gpu_workers.sh BIN MODEL_DIR OUT_DIR
#
# BIN: a `--features cuda` build of classifier-svc. Per run: closed loop at CONCURRENCY (the
# maximum), then open loop at FRACTIONS of it. The PII model is off (this measures the embedding
# path). Results: OUT_DIR/workers.jsonl. Knobs: WORKERS, ROUNDS, LOAD_SECONDS, FRACTIONS,
# CONCURRENCY, CONFIG.
set -uo pipefail

BIN=${1:?BIN}
MODEL=${2:?MODEL_DIR}
OUT=${3:?OUT_DIR}
WORKERS=${WORKERS:-1 2}
ROUNDS=${ROUNDS:-2}
LOAD_SECONDS=${LOAD_SECONDS:-8}
FRACTIONS=${FRACTIONS:-0.5}
CONFIG=${CONFIG:-classifier-svc/config/router.yaml}
KC=$(mktemp -d)
mkdir -p "$OUT"
J=$OUT/workers.jsonl
export NO_COLOR=1 SR__BERT_MODEL__MODEL_ID=$MODEL SR_CUBECL_CONFIG=classifier-svc/config/cubecl.toml \
    SR_KERNEL_CACHE=$KC SR__CLASSIFIER__PII_MODEL__MODEL_ID=""
PORT=50960

for round in $(seq "$ROUNDS"); do
    for w in $WORKERS; do
        PORT=$((PORT + 1))
        log=$OUT/serve-w$w-r$round.log
        SR__BATCHING__WORKERS=$w "$BIN" serve --config "$CONFIG" --device cuda --listen 127.0.0.1:$PORT \
            --metrics-listen "" >/dev/null 2>"$log" &
        server=$!
        until grep -q "classifier-svc SERVING" "$log"; do
            kill -0 $server 2>/dev/null || { echo "server exited" >&2; tail -5 "$log" >&2; exit 1; }
            sleep 0.05
        done
        timeout 120 "$BIN" loadgen --addr http://127.0.0.1:$PORT --seconds "$LOAD_SECONDS" \
            --fractions "$FRACTIONS" --concurrency "${CONCURRENCY:-128}" \
            | sed "s/^{/{\"workers\": $w, \"round\": $round, /" | tee -a "$J"
        kill $server 2>/dev/null; wait $server 2>/dev/null
    done
done
