"""The fused kernels' own recurrent product (kernels/csrc/packed_gemm.h: the weight packed once
per loop into panels, AVX-512 or AVX2 register tiles) against ``at::mm_out`` (MKL, which it
falls back to with ``RNNLAB_NO_PACKED_PRODUCT=1``), in one process: the variable is read when a
layer packs its weight, so rounds alternate the two on the same layers. Times inference and
forward+backward of LSTM-family layers on the fused backend, with ``nn.LSTM`` in the same rounds;
medians over the rounds.

    .venv/bin/python bench/packed_product.py --threads 2 --rounds 9
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

from rnnlab import Recurrent
from rnnlab.benchmarks.speed import once_ms as timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm-v,lstm-niaf,lstm-noaf,lstm-cifg,gru")
    parser.add_argument("--shape", default="32,100,88,256", help="B,T,I,H")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    B, T, I, H = (int(v) for v in args.shape.split(","))
    torch.manual_seed(0)
    x = torch.randn(T, B, I)
    layers = {c: Recurrent(c, I, H, backend="fused") for c in args.cells.split(",")}
    reference = torch.nn.LSTM(I, H)
    times: dict[tuple[str, str, bool], list[float]] = {}
    for train in (False, True):
        timed(reference, x, train)
        for layer in layers.values():
            timed(layer, x, train)
    for _ in range(args.rounds):
        for train in (False, True):
            times.setdefault(("nn.LSTM", "", train), []).append(timed(reference, x, train))
            for cell, layer in layers.items():
                for product in ("packed", "mm"):
                    if product == "mm":
                        os.environ["RNNLAB_NO_PACKED_PRODUCT"] = "1"
                    try:
                        times.setdefault((cell, product, train), []).append(timed(layer, x, train))
                    finally:
                        os.environ.pop("RNNLAB_NO_PACKED_PRODUCT", None)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"(B, T, I, H) = {(B, T, I, H)}, {args.threads} threads, median of {args.rounds}")
    print("| cell | infer packed ms | infer mm ms | packed / mm | packed / nn.LSTM | "
          "fwd+bwd packed ms | fwd+bwd mm ms | packed / mm | packed / nn.LSTM |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    ref_i, ref_t = med[("nn.LSTM", "", False)], med[("nn.LSTM", "", True)]
    for cell in layers:
        pi, mi = med[(cell, "packed", False)], med[(cell, "mm", False)]
        pt, mt = med[(cell, "packed", True)], med[(cell, "mm", True)]
        print(f"| {cell} | {pi:.1f} | {mi:.1f} | {pi / mi:.2f} | {pi / ref_i:.2f} | "
              f"{pt:.1f} | {mt:.1f} | {pt / mt:.2f} | {pt / ref_t:.2f} |")  # fmt: skip
    print(f"| nn.LSTM | {ref_i:.1f} | | | | {ref_t:.1f} | | | |")


if __name__ == "__main__":
    main()
