"""oneDNN's LSTM through a packed sequence (unequal lengths) against rnnlab's fused kernel, in
one run: why ``backend="auto"`` leaves a batch of unequal lengths to the kernel on the CPU.

    python bench/packed_lstm.py [--threads 2]

Prints forward+backward milliseconds per batch (median of repeats) for one and two directions,
equal and unequal lengths, and the ratio torch / fused.
"""

import argparse
import statistics
import time

import torch

from rnnlab import Recurrent


def timed(backend: str, bidirectional: bool, unequal: bool, args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    layer = Recurrent("lstm", args.input, args.hidden, 1, bidirectional=bidirectional,
                      backend=backend, batch_first=True)  # fmt: skip
    x = torch.randn(args.batch, args.steps, args.input, requires_grad=True)
    lengths = torch.full((args.batch,), args.steps)
    if unequal:
        lengths[1:] = torch.randint(args.steps - 20, args.steps, (args.batch - 1,))
    times = []
    for i in range(args.repeats + 1):
        start = time.perf_counter()
        y, _ = layer(x, lengths)
        y.sum().backward()
        if i:  # the first call warms up
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--input", type=int, default=82)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"B={args.batch} T={args.steps} I={args.input} H={args.hidden}, {args.threads} "
          f"threads, forward+backward ms per batch (median of {args.repeats})")  # fmt: skip
    timed("torch", False, False, args)  # oneDNN's first call in a process builds its kernels
    print("| directions | lengths | torch (oneDNN) | fused | torch / fused |")
    print("|---|---|---|---|---|")
    for bidirectional in (False, True):
        for unequal in (False, True):
            t = timed("torch", bidirectional, unequal, args)
            f = timed("fused", bidirectional, unequal, args)
            print(f"| {2 if bidirectional else 1} | {'unequal' if unequal else 'equal'} | "
                  f"{t:.1f} | {f:.1f} | {t / f:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
