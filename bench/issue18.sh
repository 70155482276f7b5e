#!/usr/bin/env bash
# Issue 18's experiments on this 2-core machine, one run after another (one thread each), into
# bench/out/issue18/. Each is a short run of its paper's kind against a GRU at the same size and
# budget; docs/results.md quotes the numbers with these commands.
#   bash bench/issue18.sh            # everything (about an hour and a half beside other work)
#   bash bench/issue18.sh gatel0rd   # one group: gatel0rd, ncgru, ncgru-adding, spiking, s5; moonshot (S5, T = 1000) runs only when named
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out/issue18
mkdir -p "$OUT"
rnnlab=".venv/bin/rnnlab"
run() {  # name, then the train options; a run stopped after an epoch resumes exactly
    local name=$1; shift
    [ -f "$OUT/$name/result.json" ] && return 0
    if [ -f "$OUT/$name/checkpoint.safetensors" ]; then
        "$rnnlab" train --threads 1 --seed 0 --no-progress --out "$OUT/$name" --resume "$@" >> "$OUT/$name.log" 2>&1
        return
    fi
    rm -rf "${OUT:?}/$name"
    "$rnnlab" train --threads 1 --seed 0 --no-progress --out "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
}
group=${1:-all}
task=(--model task --batch-size 32 --lr 1e-3 --optimizer adam --dropout 0)
if [[ $group == all || $group == gatel0rd ]]; then
    # Gumbsch et al.: a latent that should change only when the input says so. The adding
    # problem's state needs to change at its two marked steps out of 50.
    for cell in gatel0rd gru; do
        run "adding50-$cell" "${task[@]}" --data adding --seq-len 50 --cell $cell --hidden-size 32 --epochs 40
    done
    .venv/bin/python bench/latent_changes.py "$OUT/adding50-gatel0rd" "$OUT/adding50-gru" > "$OUT/latent_changes.md"
fi
if [[ $group == all || $group == ncgru ]]; then
    # Mucllari et al.: the orthogonal candidate on copy memory (T = 100) against the GRU.
    for cell in nc-gru gru; do
        run "copy100-$cell" "${task[@]}" --data copy --seq-len 100 --cell $cell --hidden-size 64 --epochs 30
    done
fi
if [[ $group == all || $group == ncgru-adding ]]; then
    # Mucllari et al.'s other long-T task: the adding problem at T = 200 and 500, against the GRU.
    for cell in nc-gru gru; do
        run "adding200-$cell" "${task[@]}" --data adding --seq-len 200 --cell $cell --hidden-size 64 --epochs 20
        run "adding500-$cell" "${task[@]}" --data adding --seq-len 500 --cell $cell --hidden-size 64 --epochs 30
    done
fi
if [[ $group == all || $group == spiking ]]; then
    # Bittar & Garner: spiking units on a sequence classification, spike rate beside accuracy.
    for cell in radlif adlif gru; do
        run "order-$cell" "${task[@]}" --data order --cell $cell --hidden-size 64 --epochs 30
    done
fi
if [[ $group == all || $group == s5 ]]; then
    for cell in s5 gru; do
        run "copy100-2layer-$cell" "${task[@]}" --data copy --seq-len 100 --cell $cell --hidden-size 64 --num-layers 2 --epochs 30
    done
fi
if [[ $group == moonshot ]]; then
    # The issue's moonshot: copy memory at T = 1000 below 1e-3 (Bai et al. 2018: every recurrent
    # model at the trivial 0.0204). Stops when solved.
    run "copy1000-2layer-s5" "${task[@]}" --data copy --seq-len 1000 --cell s5 --hidden-size 64 --num-layers 2 --epochs 40
fi
if [[ $group == all || $group == gatel0rd-lambda ]]; then
    # A heavier L0 weight than the paper's 0.001: fewer latent changes, at what error.
    run "adding50-gatel0rd-l0.01" "${task[@]}" --data adding --seq-len 50 --cell gatel0rd --hidden-size 32 --epochs 40 --cell-args l0_lambda=0.01
    .venv/bin/python bench/latent_changes.py "$OUT/adding50-gatel0rd" "$OUT/adding50-gatel0rd-l0.01" "$OUT/adding50-gru" > "$OUT/latent_changes.md"
fi
