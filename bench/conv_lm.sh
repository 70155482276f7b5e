#!/usr/bin/env bash
# Convolutional language models beside an LSTM on character-level PTB, on one split and metric
# (NLL per token, bpc), into bench/out/conv_lm/:
#   tcn   Bai et al. 2018's char PTB TCN at the authors' setting (the tcn-lm defaults, from
#         locuslab/TCN TCN/char_cnn/char_cnn_test.py: 3 levels of 450, kernel 3, embedding 100,
#         dropout 0.1 and 0.1, windows of 400 with 80 of context, SGD at 4, clip 0.15, batch 32;
#         2.22 M parameters);
#   gcnn  a gated convolutional network (Dauphin et al. 2017), the gcnn-lm defaults (4 blocks of
#         256, kernel 4, embedding 128; 3.36 M parameters);
#   lstm  an LSTM LM of about the TCN's size (2 x 360, embedding 100: 1.73 M parameters), Adam.
# Sized for this 2-core machine: the first TRAIN_BYTES of PTB's training text (whole lines; 1 MB,
# a fifth, by default, as bench/norms.sh), EPOCHS epochs (3), one thread each, seed 0, one run
# at a time. Valid and test are PTB's whole texts unless EVAL_BYTES limits them too (a smoke
# run). Published, for the full setting only (not comparable to this budget): TCN 1.31 bpc.
#   bash bench/conv_lm.sh              # the three runs (hours on a CPU)
#   bash bench/conv_lm.sh tcn lstm     # the named runs only
#   TRAIN_BYTES=100000 EVAL_BYTES=20000 EPOCHS=1 OUT=/tmp/smoke bash bench/conv_lm.sh  # proof
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out/conv_lm}
TRAIN_BYTES=${TRAIN_BYTES:-1000000}
EVAL_BYTES=${EVAL_BYTES:-0}
EPOCHS=${EPOCHS:-3}
NAME=ptb${TRAIN_BYTES}
DATA=$OUT/data/$NAME
SRC=${RNNLAB_PTB:-../shared/data/ptb}
mkdir -p "$DATA"
cut_lines() {  # whole lines up to the first $2 bytes of $1 (0: all of it)
    if [ "$2" -eq 0 ]; then cat "$1"; else head -c "$2" "$1" | sed '$d'; fi
}
if [ ! -f "$DATA/$NAME.train.txt" ]; then
    cut_lines "$SRC/ptb.train.txt" "$TRAIN_BYTES" > "$DATA/$NAME.train.txt"
    cut_lines "$SRC/ptb.valid.txt" "$EVAL_BYTES" > "$DATA/$NAME.valid.txt"
    cut_lines "$SRC/ptb.test.txt" "$EVAL_BYTES" > "$DATA/$NAME.test.txt"
fi
common=(--data "$NAME-char" --data-dir "$DATA" --epochs "$EPOCHS" --threads 1 --seed 0
        --no-progress)
declare -A opts=(
    [tcn]="--model tcn-lm"
    [gcnn]="--model gcnn-lm"
    [lstm]="--model lm --cell lstm --hidden-size 360 --num-layers 2 --embedding-size 100
            --dropout 0.1 --optimizer adam --lr 2e-3 --clip 0.25 --batch-size 32 --bptt 100"
)
names=("${@:-tcn gcnn lstm}")
for name in ${names[*]}; do
    [ -f "$OUT/$name/result.json" ] && continue
    rm -rf "${OUT:?}/$name"
    # shellcheck disable=SC2086
    .venv/bin/rnnlab train "${common[@]}" ${opts[$name]} --out "$OUT/$name" \
        > "$OUT/$name.log" 2>&1
    tail -1 "$OUT/$name.log"
done
.venv/bin/rnnlab compare "$OUT"/*/ 2>/dev/null || true
