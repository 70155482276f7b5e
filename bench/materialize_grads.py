"""The fused kernels' autograd with and without materialised gradients, in one process: each
forward operator's setup calls ``ctx.set_materialize_grads(False)``, so the outputs that only
carry saved tensors to the backward (the gate activations, (T, B, 4H) for an LSTM) get no
zero-filled gradient before it runs. The "materialised" rows patch that call back to True;
rounds alternate the two, and medians are reported.

    .venv/bin/python bench/materialize_grads.py --threads 2 --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.autograd.function as autograd_function

from rnnlab import Recurrent


def fwd_bwd_ms(layer: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    out, _ = layer(x)
    out.sum().backward()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm,lstm-v,gru,egru,adlif,sr-lstm")
    parser.add_argument("--shape", default="32,100,88,256", help="B,T,I,H")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    B, T, I, H = (int(v) for v in args.shape.split(","))
    ctx_class = autograd_function.FunctionCtx
    original = ctx_class.set_materialize_grads

    def forced(self: object, value: bool) -> None:  # the default behaviour, materialised
        original(self, True)  # type: ignore[arg-type]

    for cell in args.cells.split(","):
        torch.manual_seed(0)
        layer = Recurrent(cell, I, H, backend="fused")
        x = torch.randn(T, B, I)
        fwd_bwd_ms(layer, x)  # warm-up
        times: dict[str, list[float]] = {"materialised": [], "not": []}
        try:
            for _ in range(args.rounds):
                for mode in times:
                    ctx_class.set_materialize_grads = forced if mode == "materialised" else original  # type: ignore[method-assign]
                    times[mode].append(fwd_bwd_ms(layer, x))
        finally:
            ctx_class.set_materialize_grads = original  # type: ignore[method-assign]
        a, b = (statistics.median(times[m]) for m in ("materialised", "not"))
        print(f"{cell:8s} forward+backward materialised {a:7.1f} ms, not {b:7.1f} ms, "
              f"ratio {b / a:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
