#!/usr/bin/env bash
# Where one GPU encoder pass spends its time: how many kernels it launches, how long they run
# on the device, and the pass's wall time. From the repository root of a CUDA machine:
#
#   classifier-svc/scripts/kernel_profile.sh BIN MODEL_DIR OUT_DIR
#
# BIN: a `--features cuda` build of classifier-svc. Launches per pass: cubecl's execution logger
# (profiling level "minimal": kernel names only, nothing waits) over two runs of a shape with a
# different number of passes; the difference divided by the difference in passes, so model
# loading, weight conversion and first-pass compilation cancel out. Device time per pass:
# Nsight Compute (`ncu`, metric gpu__time_duration.sum) over the last 5 passes of one run, when
# `ncu` is installed. Wall time per pass: p50 of a run without either. One JSON line per shape
# on stdout and in OUT_DIR/kernels.jsonl; each shape's kernels by device time in
# OUT_DIR/top-<batch>.txt. Knobs: DTYPE (bf16), SEQ (128), BATCHES (1 32 128).
set -euo pipefail

BIN=${1:?BIN}
MODEL=${2:?MODEL_DIR}
OUT=${3:?OUT_DIR}
DTYPE=${DTYPE:-bf16}
SEQ=${SEQ:-128}
BATCHES=${BATCHES:-1 32 128}
CONFIG=${CONFIG:-classifier-svc/config/router.yaml}
mkdir -p "$OUT"
export NO_COLOR=1 SR__BERT_MODEL__MODEL_ID=$MODEL SR_KERNEL_CACHE=$OUT/kernel-cache

# bench with a fixed shape and --seconds 0: a first pass, 3 warm-up passes, 5 timed ones.
passes_per_call=9

# bench at batch $1, the shape listed $2 times; $3: execution log (empty: none).
run() {
    local batches cfg
    batches=$(printf "$1,%.0s" $(seq "$2")); batches=${batches%,}
    cfg=$OUT/cubecl-run.toml
    cp classifier-svc/config/cubecl.toml "$cfg"
    if [ -n "$3" ]; then
        rm -f "$3"
        printf '\n[profiling]\nlogger = { level = "minimal", file = "%s", append = true }\n' "$3" >>"$cfg"
    fi
    SR_CUBECL_CONFIG=$cfg "$BIN" bench --config "$CONFIG" --device cuda --dtype "$DTYPE" \
        --batches "$batches" --seq "$SEQ" --seconds 0 --runs 0
    # The logger writes from a background task; give it a moment to flush.
    sleep 1
}

for b in $BATCHES; do
    wall=$(run "$b" 3 "" | grep '"shape"' | tail -1 \
        | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["shape"]["p50_ms"])')
    run "$b" 1 "$OUT/exec-$b-1.log" >/dev/null
    run "$b" 3 "$OUT/exec-$b-3.log" >/dev/null
    csv=""
    if command -v ncu >/dev/null; then
        csv=$OUT/ncu-$b.csv
        # ncu's defaults lock the clocks to base and flush the caches before every kernel,
        # which is not how a pass runs; both off.
        SR_CUBECL_CONFIG=classifier-svc/config/cubecl.toml ncu --metrics gpu__time_duration.sum \
            --clock-control none --cache-control none --csv --print-units base --log-file "$csv" "$BIN" bench --config "$CONFIG" \
            --device cuda --dtype "$DTYPE" --batches "$b" --seq "$SEQ" --seconds 0 --runs 0 >/dev/null
    fi
    python3 classifier-svc/scripts/kernel_profile_summary.py "$OUT/exec-$b-1.log" "$OUT/exec-$b-3.log" \
        "$((2 * passes_per_call))" "$b" "$SEQ" "$DTYPE" "$wall" "$OUT/top-$b.txt" "$csv" \
        | tee -a "$OUT/kernels.jsonl"
done
