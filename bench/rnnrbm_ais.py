"""How an RNN-RBM run's AIS estimate of the NLL per frame moves with the chains and temperatures:
for each setting, R independent runs on a split (or its first --pieces pieces), their mean and
standard deviation, and the seconds taken. AIS's log Z is biased low, so the estimate of the NLL
rises towards the true value as the temperatures grow; where it stops moving is where the
final setting can be trusted.

    python bench/rnnrbm_ais.py runs/jsb-rnn-rbm --split test --pieces 20 \\
        --settings 4x100 8x500 8x2000 --runs 3
"""

from __future__ import annotations

import argparse

import torch

from rnnlab.families.music import load_sequences
from rnnlab.families.rnnrbm import ais_nll
from rnnlab.train.rundir import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument("--pieces", type=int, default=0, help="the first N pieces (0: all)")
    parser.add_argument("--settings", nargs="+", default=["4x100", "8x500"],
                        help="CHAINSxTEMPERATURES")  # fmt: skip
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=12345)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = load_run(args.run, "cpu")
    model, data = run.model, run.cfg.data
    pieces = load_sequences(data)[args.split]
    pieces = pieces[: args.pieces] if args.pieces else pieces
    print(f"{args.run}: {data} {args.split}, {len(pieces)} pieces")
    print("| chains | temperatures | NLL estimate (mean +/- std over runs) | runs | frames | s |")
    print("|---|---|---|---|---|---|")
    for setting in args.settings:
        chains, temperatures = (int(x) for x in setting.split("x"))
        est = ais_nll(model, pieces, chains, temperatures, args.runs, args.seed)  # type: ignore[arg-type]
        print(f"| {chains} | {temperatures} | {est.mean:.4f} +/- {est.std:.4f} | {args.runs} | "
              f"{est.frames} | {est.seconds:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
