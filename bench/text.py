"""Text benchmark: the rows of docs/results.md for issue 6 (Penn Treebank).

Each row is an exact ``rnnlab train`` command; the benchmark runs the rows that have no result yet
(continuing interrupted ones with --resume), then prints markdown tables and writes JSON. A row
that was stopped by hand (no result.json) is reported from its metrics, marked "running".

    python bench/text.py --rows sentence            # the sentence VAE and its LM baseline
    python bench/text.py --rows ptb-zaremba-medium  # one row
    python bench/text.py --report                   # the tables of what has started

Published figures:
  Zaremba et al. 2014, Table 1: small (2 x 200, no dropout) test ppl 114.5; medium (2 x 650,
  dropout 0.5) 82.7. pytorch/examples word_language_model: 2 x 650 LSTM, tied, dropout 0.5,
  test ppl 75.96. Bai et al. 2018, Table 3: character-level PTB, LSTM 1.36 bpc.
  Bowman et al. 2016, Table 2: sentence VAE on PTB, NLL 101 (KL 2) against an LSTM LM's 100;
  the widely used Sentence-VAE repository: 103.97 with KL 7.27.

Learning rates are in our scaling, the loss averaged over tokens: Zaremba's lr 1 and clip 5
(their loss summed over the 20 or 35 steps of a window) are lr 20 and clip 0.25 here, as in
pytorch/examples.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from rows import fmt as _fmt
from rows import options
from rows import result_of as _result
from rows import run_rows as shared_run_rows

from rnnlab.report import run_summary

PTB = dict(data="ptb", data_dir="../shared/data/ptb", seed=0, threads=1)
ZAREMBA = PTB | dict(model="lm", cell="lstm", num_layers=2, optimizer="sgd", lr=20, clip=0.25,
                     batch_size=20)  # fmt: skip
SENTENCE = PTB | dict(cell="lstm", hidden_size=512, embedding_size=300, dropout=0.5,
                      optimizer="adam", lr=0.001, clip=5, batch_size=32, epochs=30, patience=3,
                      lr_patience=1)  # fmt: skip

# name -> (kind, published figure and source, target, train arguments). kind "lm": the target is
# a test perplexity (or bpc) to reach; "vae": a per-sentence IW NLL to reach with KL >= 5.
ROWS: dict[str, tuple[str, str, float | None, list[str]]] = {
    "ptb-zaremba-small": (
        "lm", "114.5 (Zaremba 2014, small)", 114.5,
        options(hidden_size=200, dropout=0, init=0.1, lr_decay=0.5, lr_decay_start=4, bptt=20,
                epochs=13, **ZAREMBA),
    ),
    "ptb-zaremba-medium": (
        "lm", "82.7 (Zaremba 2014, medium)", 82.7,
        options(hidden_size=650, dropout=0.5, init=0.05, lr_decay=0.8333, lr_decay_start=6,
                bptt=35, epochs=39, **ZAREMBA),
    ),
    "ptb-tied-650-variational": (
        "lm", "75.96 (pytorch/examples, tied 650)", 75.96,
        # init 0.05 as Zaremba's medium model: with torch's default N(0, 1) embedding, which
        # tying makes the output layer too, a first epoch ended at valid ppl 387 (202.65 with it).
        options(hidden_size=650, dropout=0.5, tied="", variational="", init=0.05, lr_decay=0.25,
                lr_decay_start=0, lr_patience=0, bptt=35, epochs=40, patience=6,
                **(ZAREMBA | dict(threads=2))),
    ),
    "ptb-char-lstm-800": (
        "lm", "1.36 bpc (Bai 2018, LSTM, ~3M params)", 1.36,
        # num_layers, init and lr_decay_start are the values the run had (the language model's
        # defaults became Zaremba's small model later: 2 layers, init 0.1, decay from epoch 4).
        options(data="ptb-char", data_dir="../shared/data/ptb", model="lm", cell="lstm",
                hidden_size=800, num_layers=1, embedding_size=64, dropout=0.1, init=0,
                optimizer="adam", lr=0.002, clip=1.0, batch_size=64, bptt=150, epochs=30,
                patience=4, lr_patience=1, lr_decay_start=0, seed=0, threads=1),
    ),
    "ptb-sentence-vae-512": (
        "vae", "101 with KL 2 (Bowman 2016); 103.97 with KL 7.27 (Sentence-VAE repo)", 101.0,
        options(model="sentence-vae", z_size=32, free_bits=0.25, kl_schedule="linear",
                kl_anneal=2, iw_samples=50, **SENTENCE),
    ),
    "ptb-sentence-lm-512": (
        "vae", "100 (Bowman 2016, LSTM LM)", None,
        # The VAE's command without the latent options (the sentence LM refuses them).
        options(model="sentence-lm", **SENTENCE),
    ),
}  # fmt: skip


def command(name: str, out: Path) -> list[str]:
    # Flags without a value (--tied, --variational) are written as "--tied ''" by options().
    args = [a for a in ROWS[name][3] if a != ""]
    return ["train", *args, "--out", str(out / name)]


def _history(run: Path) -> list[dict[str, object]]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def report(out: Path) -> list[dict[str, object]]:
    """Print the markdown tables of every row that has started, and write them as JSON."""
    rows = []
    lm_lines, vae_lines = [], []
    for name, (kind, published, target, _) in ROWS.items():
        run = out / name
        if not (run / "config.json").is_file():
            continue
        s, r, history = run_summary(run), _result(run), _history(run)
        row = {"row": name, "kind": kind, "published": published, "target": target, **s, **r,
               "command": "rnnlab " + shlex.join(command(name, out))}  # fmt: skip
        rows.append(row)
        wall = sum(float(h["seconds"]) for h in history)  # type: ignore[arg-type]
        if kind == "lm":
            key = "bpc" if "char" in name else "ppl"
            best = min(history, key=lambda h: h["valid_nll"]) if history else {}  # type: ignore[arg-type, return-value]
            test = r.get(f"test_{key}", best.get(f"test_{key}"))
            met = None if test is None or target is None else test <= target  # type: ignore[operator]
            lm_lines.append(
                f"| {name} | {_fmt(s.get('num_params'), ',')} | {len(history)} | "
                f"{_fmt(r.get(f'valid_{key}', best.get(f'valid_{key}')), '.2f')} | "
                f"{_fmt(test, '.2f')} {key} | {published} | "
                f"{'-' if met is None else 'yes' if met else 'no'} | {wall:.0f} | {s['status']} |"
            )
        else:
            best = min(history, key=lambda h: h["valid_neg_elbo"]) if history else {}  # type: ignore[arg-type, return-value]
            vae_lines.append(
                f"| {name} | {_fmt(s.get('num_params'), ',')} | {len(history)} | "
                f"{_fmt(best.get('epoch'), 'd')} | {_fmt(best.get('valid_neg_elbo'), '.2f')} | "
                f"{_fmt(best.get('test_neg_elbo'), '.2f')} | "
                f"{_fmt(r.get('test_iw_nll'), '.2f')} (k={r.get('iw_samples', '-')}) | "
                f"{_fmt(best.get('test_kl'), '.2f')} | {_fmt(best.get('test_active_units'), 'd')} "
                f"| {_fmt(best.get('test_mutual_info'), '.2f')} | {published} | {wall:.0f} | "
                f"{s['status']} |"
            )
    if lm_lines:
        print("| row | params | epochs | valid | test | published | met | wall s | status |")
        print("| --- " * 9 + "|")
        print("\n".join(lm_lines) + "\n")
    if vae_lines:
        print(
            "| row | params | epochs | best epoch | valid -ELBO | test -ELBO | test IW NLL | "
            "test KL | active units | MI | published | wall s | status |"
        )
        print("| --- " * 13 + "|")
        print("\n".join(vae_lines) + "\n")
    for row in rows:
        print(f"- {row['row']}: `{row['command']}`")
    (out / "text.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--rows", default="all", help="all, 'sentence', 'lm', or comma-separated row names"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/out/text"))
    parser.add_argument("--report", action="store_true", help="only print the tables")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        if args.rows == "all":
            names = list(ROWS)
        elif args.rows == "sentence":
            names = [n for n in ROWS if "sentence" in n]
        elif args.rows == "lm":
            names = [n for n, (kind, *_) in ROWS.items() if kind == "lm"]
        else:
            names = args.rows.split(",")
        shared_run_rows({name: command(name, args.out) for name in names}, args.out)
    report(args.out)
