"""The LSTM's float32 gate pass (three sigmoids and two tanh a unit, as csrc/lstm.cpp's forward
step) with the kernels' nonlinearities (csrc/safe_math.h: the rational tanh) against the same
pass with glibc's tanhf (std::tanh, vectorised by -ffast-math), both compiled here with the
extension's flags, alternated in one process; medians over the rounds. First, the compiled
float32 tanh's largest error against float64 over [-20, 20], and what it makes of NaN and inf.

    .venv/bin/python bench/gate_pass.py --threads 2 --rounds 15
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.utils.cpp_extension import load_inline

CSRC = Path(__file__).resolve().parents[1] / "src" / "rnnlab" / "kernels" / "csrc"

SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <chrono>
#include <cmath>
#include "safe_math.h"

struct Kernels {  // the fused kernels' forms
  static float th(float x) { return rnnlab::tanh(x); }
  static float sg(float x) { return rnnlab::sigmoid(x); }
};
struct Glibc {  // the same formulas on std::tanh
  static float th(float x) { return std::tanh(x); }
  static float sg(float x) { return 0.5f * std::tanh(0.5f * x) + 0.5f; }
};

template <class F>
double pass(at::Tensor pre, at::Tensor xp, at::Tensor c, at::Tensor y, int64_t steps) {
  const int64_t B = pre.size(0), GH = pre.size(1), H = GH / 4;
  auto cn = at::empty({B, H}, pre.options());
  const auto start = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < steps; ++s) {
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<float> g(4 * H);
      for (int64_t b = b0; b < b1; ++b) {
        const float* pr = pre.data_ptr<float>() + b * GH;
        const float* x = xp.data_ptr<float>() + b * GH;
        const float* cp = c.data_ptr<float>() + b * H;
        float* cw = cn.data_ptr<float>() + b * H;
        float* yw = y.data_ptr<float>() + b * H;
        float *I = g.data(), *Fg = I + H, *Z = Fg + H, *O = Z + H;
        for (int64_t h = 0; h < H; ++h) Z[h] = F::th(pr[2 * H + h] + x[2 * H + h]);
        for (int64_t h = 0; h < H; ++h) I[h] = F::sg(pr[h] + x[h] + 0.1f * cp[h]);
        for (int64_t h = 0; h < H; ++h) Fg[h] = F::sg(pr[H + h] + x[H + h] + 0.1f * cp[h]);
        for (int64_t h = 0; h < H; ++h) cw[h] = Z[h] * I[h] + cp[h] * Fg[h];
        for (int64_t h = 0; h < H; ++h) O[h] = F::sg(pr[3 * H + h] + x[3 * H + h] + 0.1f * cw[h]);
        for (int64_t h = 0; h < H; ++h) yw[h] = F::th(cw[h]) * O[h];
      }
    });
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double kernels_pass(at::Tensor a, at::Tensor b, at::Tensor c, at::Tensor y, int64_t n) {
  return pass<Kernels>(a, b, c, y, n);
}
double glibc_pass(at::Tensor a, at::Tensor b, at::Tensor c, at::Tensor y, int64_t n) {
  return pass<Glibc>(a, b, c, y, n);
}
at::Tensor kernels_tanh(at::Tensor x) {  // as compiled into the kernels (FMA, -ffast-math)
  auto out = at::empty_like(x);
  const float* in = x.data_ptr<float>();
  float* o = out.data_ptr<float>();
  for (int64_t i = 0; i < x.numel(); ++i) o[i] = Kernels::th(in[i]);
  return out;
}
"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _shape(text: str) -> tuple[int, int]:
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"B,H: two positive integers, got {text!r}")
    return int(parts[0]), int(parts[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=_shape, default=(32, 256), help="B,H")
    parser.add_argument("--steps", type=_positive, default=100)
    parser.add_argument("--threads", type=_positive, default=2)
    parser.add_argument("--rounds", type=_positive, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ext = load_inline(
        f"rnnlab_gate_pass_{int(time.time())}", cpp_sources=[SOURCE],
        functions=["kernels_pass", "glibc_pass", "kernels_tanh"], extra_include_paths=[str(CSRC)],
        extra_cflags=["-O3", "-march=native", "-ffast-math", "-fopenmp"],
        extra_ldflags=["-fopenmp"],
    )  # fmt: skip
    xs = torch.cat([torch.linspace(-20, 20, 4_000_001), torch.tensor([float("nan"), float("inf")])])
    got, want = ext.kernels_tanh(xs).double(), torch.tanh(xs.double())
    finite = ~torch.isnan(want)
    print(f"the kernels' float32 tanh on [-20, 20]: maximum absolute error "
          f"{(got - want)[finite].abs().max().item():.2e} (torch's float32 tanh: "
          f"{(torch.tanh(xs).double() - want)[finite].abs().max().item():.2e}); "
          f"tanh(nan) = {got[-2].item()}, tanh(inf) = {got[-1].item()}")  # fmt: skip
    B, H = args.shape
    gen = torch.Generator().manual_seed(0)
    pre, xp = torch.randn(B, 4 * H, generator=gen) * 3, torch.randn(B, 4 * H, generator=gen)
    c, y = torch.randn(B, H, generator=gen), torch.empty(B, H)
    times: dict[str, list[float]] = {"kernels": [], "glibc": []}
    for _ in range(args.rounds):
        times["kernels"].append(ext.kernels_pass(pre, xp, c, y, args.steps))
        times["glibc"].append(ext.glibc_pass(pre, xp, c, y, args.steps))
    k, g = (statistics.median(times[n]) * 1e3 for n in ("kernels", "glibc"))
    print(f"gate pass, {args.steps} steps of {B} x {H} units, {args.threads} threads, "
          f"median of {args.rounds}: rational tanh {k:.2f} ms, glibc tanhf {g:.2f} ms, "
          f"ratio {k / g:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
