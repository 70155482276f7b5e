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

import torch

from rnnlab.benchmarks.speed import build, interleaved_medians, matmul_floor, once_ms

CELLS = ("adlif", "radlif")


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
    floors = {c: (lambda c=c: matmul_floor(c, (B, T, I, H), 1)) for c in CELLS}
    med = interleaved_medians(modules, x, args.rounds, floors)
    rates = {}
    for c in CELLS:  # the spike rate of the timed input, from the fused layer's last call
        once_ms(modules[(c, "fused")], x, True)
        rates[c] = modules[(c, "fused")].statistics()["spike_rate"]
    print(f"shape (B,T,I,H) = {B},{T},{I},{H}, {args.threads} threads, median of {args.rounds} "
          "interleaved rounds, float32")  # fmt: skip
    print("| cell | spike rate | step fwd+bwd ms | fused fwd+bwd ms | step / fused | step / floor "
          "| fused / floor | step infer ms | fused infer ms | step / fused |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for c in CELLS:
        s, f, fl = med[((c, "step"), "train")], med[((c, "fused"), "train")], med[(c, "floor")]
        si, fi = med[((c, "step"), "infer")], med[((c, "fused"), "infer")]
        print(
            f"| {c} | {rates[c]:.3f} | {s:.1f} | {f:.1f} | {s / f:.2f} | {s / fl:.2f} | "
            f"{f / fl:.2f} | {si:.1f} | {fi:.1f} | {si / fi:.2f} |"
        )


if __name__ == "__main__":
    main()
