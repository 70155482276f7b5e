"""A music run's test NLL per frame two ways: rnnlab's (every frame, the first predicted from
zeros) and that of Bai et al.'s code (locuslab/TCN, poly_music: x[:-1] predicts x[1:], so each
piece's first frame is neither predicted nor counted). For the TCN rows of docs/results.md.

    python bench/first_frame.py bench/out/polyphonic/jsb-tcn-150x4-k5 [more runs]
"""

import sys
from pathlib import Path

import torch

import rnnlab
from rnnlab.data import make_batches
from rnnlab.families.music import load_sequences
from rnnlab.train.rundir import load_run


def first_frame_nll(run: str, split: str = "test") -> tuple[float, float]:
    """(NLL per frame over every frame, NLL per frame without each piece's first frame)."""
    model = rnnlab.load(run)
    data = load_run(Path(run)).cfg.data
    pieces = load_sequences(data)[split]
    total, first, frames = 0.0, 0.0, 0
    with torch.no_grad():
        for batch in make_batches(pieces, 64, shuffle=False):
            out = model(batch.x, batch.lengths)
            total += float(out.total.double())
            first += float(out.log_prob[:, 0].double().sum())
            frames += out.num_frames
    return -total / frames, -(total - first) / (frames - len(pieces))


if __name__ == "__main__":
    for path in sys.argv[1:]:
        every, later = first_frame_nll(path)
        print(f"{path}: every frame {every:.4f}, without first frames {later:.4f} nats/frame")
