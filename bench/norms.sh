#!/usr/bin/env bash
# Issue 18 item 10: the normalisations and quantised training on character-level PTB, each
# against the same LSTM without it, into bench/out/norms/. The setting follows Cooijmans et al.
# 2017's character PTB (non-overlapping subsequences from a zero state, --reset-state; an LSTM;
# gradient clipping at 1) at the size this 2-core machine affords: 128 units, windows of 50,
# batches of 64, the first 1 MB of PTB's training text (a fifth), Adam, 3 epochs, one thread,
# seed 0. Valid and test are PTB's whole valid and test texts.
#   bash bench/norms.sh            # every run, two at a time (about an hour and a half)
#   bash bench/norms.sh none batch # the named runs only
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out/norms
DATA=$OUT/data/ptb1m
mkdir -p "$DATA"
SRC=${RNNLAB_PTB:-../shared/data/ptb}
if [ ! -f "$DATA/ptb1m.train.txt" ]; then  # whole lines up to the first 1,000,000 bytes
    head -c 1000000 "$SRC/ptb.train.txt" | sed '$d' > "$DATA/ptb1m.train.txt"
    cp "$SRC/ptb.valid.txt" "$DATA/ptb1m.valid.txt"
    cp "$SRC/ptb.test.txt" "$DATA/ptb1m.test.txt"
fi
common=(--data ptb1m-char --data-dir "$DATA" --cell lstm --hidden-size 128 --num-layers 1
        --dropout 0 --optimizer adam --lr 2e-3 --clip 1 --batch-size 64 --bptt 50 --reset-state
        --epochs 3 --init 0 --threads 1 --seed 0 --no-progress)
declare -A opts=(
    [none]=""
    [layer]="--norm layer"
    [batch]="--norm batch --norm-steps 50"
    [batch-layer]="--norm batch-layer --norm-steps 50"
    [assorted-time]="--norm assorted-time --norm-window 5"
    [quant8]="--quant-bits 8"
    [quant4]="--quant-bits 4"
    [quant2]="--quant-bits 2"
)
order=(none batch layer assorted-time batch-layer quant4 quant2 quant8)
names=("${@:-${order[@]}}")
run() {
    local name=$1
    [ -f "$OUT/$name/result.json" ] && return 0
    rm -rf "${OUT:?}/$name"
    # shellcheck disable=SC2086
    .venv/bin/rnnlab train "${common[@]}" ${opts[$name]} --out "$OUT/$name" > "$OUT/$name.log" 2>&1
}
# Two at a time: each run has its own thread (never timed against each other: no speed is read).
i=0
for name in "${names[@]}"; do
    run "$name" &
    i=$((i + 1))
    if (( i % 2 == 0 )); then wait; fi
done
wait
.venv/bin/rnnlab compare "$OUT"/*/ 2>/dev/null || true
