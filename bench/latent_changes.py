"""How often a trained task model's latent state changes (issue 18: GateL0RD against a GRU).

For each run directory of the task family: the fraction of (step, sequence, unit) triples of a
fresh test set (2,560 sequences, seed 1234) where the latent moved by more than a tolerance,
|h_t - h_{t-1}| > tol, for several tolerances, beside the run's test score. The latent is the
state part that carries the memory: a GRU's h (its output), GateL0RD's h (not its output y).
GateL0RD's own count (its gates' openings, logged as test_gate_openings) is the tol = 0 column.
It measures; it asserts nothing.

    python bench/latent_changes.py RUN [RUN ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from rnnlab.data.tasks import make_task
from rnnlab.train.rundir import load_run

TOLERANCES = (0.0, 1e-6, 1e-3, 1e-2)
LATENT_PART = {"gatel0rd": 1}  # the state part that is the latent; 0 (the output) elsewhere


def latent_changes(run: Path) -> dict[str, float]:
    loaded = load_run(run)
    cfg, model = loaded.cfg, loaded.model
    task = make_task(cfg.data, seq_len=cfg.seq_len, delay=getattr(cfg, "delay", 0))
    data = task.generate(2560, torch.Generator().manual_seed(1234))
    stack = model.rnn
    cell = stack.layer_cells[0]
    part = LATENT_PART.get(cfg.cell, 0)
    x = data.x.transpose(0, 1)  # (T, B, I)
    changed = {tol: 0.0 for tol in TOLERANCES}
    count = 0.0
    with torch.no_grad():
        x_proj = cell.project_input(x)
        state = cell.initial_state(x.shape[1], x)
        for t in range(x.shape[0]):
            new = cell.step(x_proj[t], state, None)
            valid = (t < data.lengths).unsqueeze(-1).to(x.dtype)  # (B, 1)
            delta = (new[part] - state[part]).abs()
            for tol in TOLERANCES:
                changed[tol] += float(((delta > tol).to(x.dtype) * valid).sum())
            count += float(valid.sum()) * delta.shape[-1]
            state = tuple(torch.where(valid.bool(), n, s) for n, s in zip(new, state, strict=True))
    return {f"tol={tol:g}": changed[tol] / count for tol in TOLERANCES}


def main(argv: list[str]) -> None:
    print("| run | cell | " + " | ".join(f"changed, tol {t:g}" for t in TOLERANCES) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in TOLERANCES) + " |")
    for run in map(Path, argv):
        loaded = load_run(run)
        fractions = latent_changes(run)
        cells = " | ".join(f"{v:.4f}" for v in fractions.values())
        print(f"| {run.name} | {loaded.cfg.cell} | {cells} |")


if __name__ == "__main__":
    main(sys.argv[1:])
