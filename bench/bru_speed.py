"""Step loop against the fused kernels of the uBRU (filter and smoothing, csrc/bru.cpp), with
smoothing on (the cell's default) and off, in one process: each round times every (variant,
backend) once, and the median over rounds is reported, so that both backends see the same machine
load (the machine is shared). Forward+backward (training mode) and inference (no_grad), with the
uBRU's matrix-product floor (rnnlab.benchmarks.speed.matmul_floor) timed in the same rounds.

    .venv/bin/python bench/bru_speed.py --threads 1 --rounds 5
"""

from __future__ import annotations

import argparse

import torch

from rnnlab.benchmarks.speed import build, interleaved_medians, matmul_floor

VARIANTS = {"smoothing": True, "filter only": False}  # name -> the cell's ``smoothing``


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
    modules = {
        (v, b): build("bru", I, H, b, cell_args={"smoothing": smoothing})
        for v, smoothing in VARIANTS.items()
        for b in ("step", "fused")
    }
    floors = {"bru": lambda: matmul_floor("bru", (B, T, I, H), 1)}
    med = interleaved_medians(modules, x, args.rounds, floors)
    fl = med[("bru", "floor")]
    print(f"bru, shape (B,T,I,H) = {B},{T},{I},{H}, {args.threads} threads, median of "
          f"{args.rounds} interleaved rounds, float32; matrix products {fl:.1f} ms")  # fmt: skip
    print("| variant | step fwd+bwd ms | fused fwd+bwd ms | step / fused | step / floor | "
          "fused / floor | step infer ms | fused infer ms | step / fused |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for v in VARIANTS:
        s, f = med[((v, "step"), "train")], med[((v, "fused"), "train")]
        si, fi = med[((v, "step"), "infer")], med[((v, "fused"), "infer")]
        print(
            f"| {v} | {s:.1f} | {f:.1f} | {s / f:.2f} | {s / fl:.2f} | {f / fl:.2f} | "
            f"{si:.1f} | {fi:.1f} | {si / fi:.2f} |"
        )


if __name__ == "__main__":
    main()
