#!/usr/bin/env bash
# Issue 19 item 2: CTC phone recognisers on the espeak-synth corpus (rnnlab data make-speech:
# 2,400 PTB sentences, 96 espeak-ng speakers, 1,800 / 300 / 300 utterances with speaker-disjoint
# splits), into bench/out/ctc/. Every run: 2 bidirectional layers, frames stacked in pairs
# (--stride 2), Adam at 1e-3, batches of 16, dropout 0.2, at most 25 epochs (patience 6),
# seed 0, one thread; the PER by greedy decoding at the best validation epoch and by the prefix
# beam search (beam 8) with its weights. adlif takes stable=true (the authors' range of a let its
# state overflow over these ~300-step utterances: cells/spiking.py); the 16-unit LSTM a higher
# learning rate, no dropout and more patience (at the defaults it sat on the blank-only output,
# PER 100%, for 7 epochs and stopped).
#   bash bench/ctc.sh                 # the corpus (if missing), then every run in turn
#   bash bench/ctc.sh lstm gru        # the named runs only
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out/ctc
mkdir -p "$OUT"
CORPUS=${RNNLAB_DATA:-$HOME/.cache/rnnlab/data}/espeak-synth
if [ ! -f "$CORPUS/manifest.json" ]; then
    rnnlab data make-speech --data-dir "${RNNLAB_PTB:-../shared/data/ptb}"
fi
common=(--model ctc --data espeak-synth --num-layers 2 --stride 2 --lr 1e-3 --batch-size 16
        --dropout 0.2 --epochs 25 --patience 6 --threads "${THREADS:-1}" --seed 0 --no-progress)
declare -A opts=(
    [lstm]="--cell lstm --hidden-size 128"
    [gru]="--cell gru --hidden-size 128"
    [bru]="--cell bru --hidden-size 128"
    [adlif]="--cell adlif --hidden-size 128 --cell-args stable=true"
    [lstm16]="--cell lstm --hidden-size 16 --dropout 0 --lr 3e-3 --epochs 40 --patience 15"
)
runs=("$@")
[ ${#runs[@]} -eq 0 ] && runs=(lstm gru lstm16 bru adlif)
for name in "${runs[@]}"; do
    [ -n "${opts[$name]+x}" ] || { echo "unknown run $name: ${!opts[*]}" >&2; exit 2; }
    rm -rf "$OUT/$name"
    # shellcheck disable=SC2086
    rnnlab train "${common[@]}" ${opts[$name]} --out "$OUT/$name" > "$OUT/$name.log" 2>&1
    tail -1 "$OUT/$name.log"
done
