#!/bin/bash
# The same short runs on the old main (1f8b650) and on the families redesign; metrics must match.
# Usage: git worktree add /tmp/old 1f8b650 && tools/family_parity.sh OUTDIR
# (RNNLAB_NO_EXTENSION=1: both run the step loop, so that the two checkouts do not rebuild the
# shared kernel cache in turn; the kernels are the same in both.)
set -u
PTB=${PTB:-$(pwd)/../shared/data/ptb}
mkdir -p "$1" && cd "$1"
PY=${PYTHON:-python}
export RNNLAB_NO_EXTENSION=1
TOY=${TOY:-$PWD/toy}
if [ ! -f "$TOY/toy.train.txt" ]; then  # a small corpus: the first lines of PTB's splits
  mkdir -p "$TOY"
  head -n 1500 "${PTB:-../shared/data/ptb}/ptb.train.txt" > "$TOY/toy.train.txt"
  head -n 200 "${PTB:-../shared/data/ptb}/ptb.valid.txt" > "$TOY/toy.valid.txt"
  head -n 200 "${PTB:-../shared/data/ptb}/ptb.test.txt" > "$TOY/toy.test.txt"
fi
COMMON="--threads 1 --no-progress --seed 3"
LMOPTS="--cell lstm --hidden-size 16 --num-layers 2 --dropout 0.2 --init 0.1 --optimizer sgd --lr 20 --lr-decay 0.5 --lr-decay-start 1 --clip 0.25 --batch-size 10 --bptt 20 --epochs 2 --patience 20 --lr-patience 5"
SENT="--cell lstm --hidden-size 16 --embedding-size 12 --dropout 0.3 --optimizer adam --lr 0.003 --clip 5 --batch-size 32 --epochs 2 --patience 3 --lr-patience 1 --num-layers 1"
declare -A OLD NEW
OLD[rnn]="--data jsb --cell lstm --hidden-size 16 --epochs 2"
NEW[rnn]="${OLD[rnn]}"
OLD[nade]="--data jsb --model rnn-nade --cell gru --hidden-size 8 --nade-size 10 --epochs 2"
NEW[nade]="${OLD[nade]}"
OLD[vrnn]="--data jsb --model vrnn --cell gru --hidden-size 8 --z-size 4 --epochs 2 --iw-samples 3 --kl-anneal 3 --dropout 0"
NEW[vrnn]="--data jsb --model vrnn --cell gru --hidden-size 8 --z-size 4 --epochs 2 --iw-samples 3 --kl-anneal 3"
OLD[task]="--data adding --seq-len 30 --cell lstm --hidden-size 8 --epochs 2 --test-size 200 --train-size 320 --chrono 30"
NEW[task]="${OLD[task]}"
OLD[lm]="--data toy --data-dir ${TOY:-/tmp/toy} --model lm $LMOPTS"
NEW[lm]="${OLD[lm]}"
OLD[svae]="--data toy --data-dir ${TOY:-/tmp/toy} --model sentence-vae $SENT --z-size 4 --free-bits 0.1 --kl-anneal 2 --kl-schedule linear --iw-samples 5"
NEW[svae]="${OLD[svae]}"
OLD[slm]="--data toy --data-dir ${TOY:-/tmp/toy} --model sentence-lm $SENT"
NEW[slm]="${OLD[slm]}"
for k in rnn nade vrnn task lm svae slm; do
  rm -rf old-$k new-$k
  PYTHONPATH=${OLD_SRC:-/tmp/old/src} $PY -m rnnlab.cli train ${OLD[$k]} $COMMON --out old-$k > old-$k.log 2>&1
  $PY -m rnnlab.cli train ${NEW[$k]} $COMMON --out new-$k > new-$k.log 2>&1
  $PY - "$k" <<'PYEOF'
import json, sys
k = sys.argv[1]
def rows(d):
    with open(f"{d}/metrics.jsonl") as f:
        return [json.loads(line) for line in f]
o, n = rows(f"old-{k}"), rows(f"new-{k}")
pairs = [(a, b) for x, y in zip(o, n, strict=True) for a, b in ((x, y),)]
keys = [key for x, y in pairs for key in sorted(set(x) & set(y) - {"seconds"})]
same = all(x[key] == y[key] for x, y in pairs for key in set(x) & set(y) - {"seconds"})
ro, rn = (json.load(open(f"{d}-{k}/result.json")) for d in ("old", "new"))
shared = sorted(set(ro) & set(rn) - {"wall_time_s", "versions", "model", "threads"})
diff = [s for s in shared if ro[s] != rn[s]]
print(f"{k}: {len(o)} epochs, {len(keys)} metric values {'identical' if same else 'DIFFER'}; "
      f"result.json {len(shared) - len(diff)}/{len(shared)} shared fields equal {diff or ''}")
PYEOF
done
