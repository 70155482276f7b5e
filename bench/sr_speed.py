"""Step loop against the fused kernel of the state-regularised cells (sr-gru, sr-lstm), in one
process: each round times every (cell, backend) once, and the median over rounds is reported, so
that all of them see the same machine load (the machine is shared). Forward+backward (training
mode) and inference (no_grad), with torch's nn.LSTM and nn.GRU and each cell's matrix-product
floor (rnnlab.benchmarks.speed.matmul_floor: its input and recurrent products, not the two small
centroid products a step) timed in the same rounds.

    .venv/bin/python bench/sr_speed.py --threads 1 --rounds 5
"""

from __future__ import annotations

import argparse

import torch

from rnnlab.benchmarks.speed import build, interleaved_medians, matmul_floor

CELLS = ("sr-gru", "sr-lstm")
REFERENCES = ("torch:lstm", "torch:gru")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--shape", default="32,100,88,256", help="B,T,I,H")
    parser.add_argument("--centroids", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    B, T, I, H = (int(v) for v in args.shape.split(","))
    torch.manual_seed(0)
    x = torch.randn(T, B, I)
    cell_args = {"centroids": args.centroids}
    modules = {(c, b): build(c, I, H, b, cell_args=cell_args)
               for c in CELLS for b in ("step", "fused")}  # fmt: skip
    modules.update({(r, "torch"): build(r, I, H, "torch") for r in REFERENCES})
    floors = {c: (lambda c=c: matmul_floor(c, (B, T, I, H), 1)) for c in CELLS}
    med = interleaved_medians(modules, x, args.rounds, floors)
    print(f"shape (B,T,I,H) = {B},{T},{I},{H}, k = {args.centroids}, {args.threads} threads, "
          f"median of {args.rounds} interleaved rounds, float32")  # fmt: skip
    print("| cell | step fwd+bwd ms | fused fwd+bwd ms | step / fused | step / floor | "
          "fused / floor | fused / nn.LSTM | step infer ms | fused infer ms | "
          "step / fused |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    lstm = med[(("torch:lstm", "torch"), "train")]
    for c in CELLS:
        s, f, fl = med[((c, "step"), "train")], med[((c, "fused"), "train")], med[(c, "floor")]
        si, fi = med[((c, "step"), "infer")], med[((c, "fused"), "infer")]
        print(
            f"| {c} | {s:.1f} | {f:.1f} | {s / f:.2f} | {s / fl:.2f} | {f / fl:.2f} | "
            f"{f / lstm:.2f} | {si:.1f} | {fi:.1f} | {si / fi:.2f} |"
        )
    for r in REFERENCES:
        t, i = med[((r, "torch"), "train")], med[((r, "torch"), "infer")]
        print(f"| {r} | fwd+bwd {t:.1f} ms | infer {i:.1f} ms |")


if __name__ == "__main__":
    main()
