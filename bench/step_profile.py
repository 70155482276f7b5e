"""Where a step-loop cell's time goes: forward+backward of one layer on the step backend under
torch.profiler, the operators ranked by their own CPU time. A cell whose time is in a few large
operators (the CRU's matrix exponentials) gains little from a fused kernel; one whose time is
spread over many small calls and copies (the loop's overhead) would.

    .venv/bin/python bench/step_profile.py --cell cru --shape 32,50,8,16
    .venv/bin/python bench/step_profile.py --cell arma --shape 32,100,8,8
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.profiler import ProfilerActivity, profile

from rnnlab import Recurrent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", required=True)
    parser.add_argument("--shape", default="32,100,88,256", help="B,T,I,H")
    parser.add_argument("--cell-args", default="{}", help="JSON, e.g. '{\"p\": 3}'")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, T, I, H = (int(v) for v in args.shape.split(","))
    layer = Recurrent(args.cell, I, H, cell_args=json.loads(args.cell_args), backend="step")
    x = torch.randn(T, B, I)

    def once() -> None:
        out, _ = layer(x)
        out.sum().backward()

    once()  # warm-up
    start = time.perf_counter()
    once()
    wall = (time.perf_counter() - start) * 1000
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        once()
    rows = prof.key_averages()
    total = sum(r.self_cpu_time_total for r in rows)
    print(f"{args.cell} (B, T, I, H) = {(B, T, I, H)}, {args.threads} thread(s): "
          f"forward+backward {wall:.1f} ms (unprofiled)")  # fmt: skip
    for r in sorted(rows, key=lambda r: -r.self_cpu_time_total)[: args.top]:
        share = 100 * r.self_cpu_time_total / total
        print(f"  {r.key:50s} {share:5.1f}%  {r.count:6d} calls")


if __name__ == "__main__":
    main()
