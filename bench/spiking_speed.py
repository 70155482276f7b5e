"""Step loop against the fused kernel of the spiking cells (adlif, radlif), in one process: each
round times every (cell, backend) once, and the median over rounds is reported, so that both
backends of a cell see the same machine load (the machine is shared). Forward+backward (training
mode) and inference (no_grad), with the cell's matrix-product floor
(rnnlab.benchmarks.speed.matmul_floor: adlif has no recurrent product, radlif one H x H product a
step each way) timed in the same rounds, and the spike rate of the timed inputs (the fused
forward's recurrent product skips the neurons that did not spike).

    .venv/bin/python bench/spiking_speed.py --threads 1 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rnnlab.benchmarks.speed import build, matmul_floor

CELLS = ("adlif", "radlif")


def once(module: torch.nn.Module, x: torch.Tensor, train: bool) -> float:
    start = time.perf_counter()
    if train:
        out, _ = module(x)
        out.sum().backward()
    else:
        with torch.no_grad():
            module(x)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--shape", default="32,100,88,256", help="B,T,I,H")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    B, T, I, H = (int(v) for v in args.shape.split(","))
    torch.manual_seed(0)
    x = torch.randn(T, B, I)
    modules = {(c, b): build(c, I, H, b) for c in CELLS for b in ("step", "fused")}
    rates = {}
    for (c, _), m in modules.items():  # warm-up (and the extension build)
        once(m, x, True)
        rates[c] = m.statistics()["spike_rate"]
    times: dict[tuple[str, str, str], list[float]] = {}
    for _ in range(args.rounds):
        for (c, b), m in modules.items():
            for mode in ("train", "infer"):
                times.setdefault((c, b, mode), []).append(once(m, x, mode == "train"))
        for c in CELLS:
            times.setdefault((c, "floor", "train"), []).append(matmul_floor(c, (B, T, I, H), 1))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"shape (B,T,I,H) = {B},{T},{I},{H}, {args.threads} threads, median of {args.rounds} "
          "interleaved rounds, float32")  # fmt: skip
    print("| cell | spike rate | step fwd+bwd ms | fused fwd+bwd ms | step / fused | step / floor "
          "| fused / floor | step infer ms | fused infer ms | step / fused |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for c in CELLS:
        s, f, fl = med[(c, "step", "train")], med[(c, "fused", "train")], med[(c, "floor", "train")]
        si, fi = med[(c, "step", "infer")], med[(c, "fused", "infer")]
        print(
            f"| {c} | {rates[c]:.3f} | {s:.1f} | {f:.1f} | {s / f:.2f} | {s / fl:.2f} | "
            f"{f / fl:.2f} | {si:.1f} | {fi:.1f} | {si / fi:.2f} |"
        )


if __name__ == "__main__":
    main()
