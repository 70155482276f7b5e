// The linear recurrence h_t = a_t * h_{t-1} + b_t of the parallel-scan cells (minGRU, minLSTM),
// computed exactly and sequentially: on a CPU this O(T B H) loop is the fast path, where the
// log-space parallel scan pays for exp, log and logcumsumexp.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include "safe_math.h"

#include <algorithm>
#include <cmath>
#include <vector>

// Both cells whole: their coefficients a_t, b_t are computed from x_proj (T, B, G*H) inside
// the recurrence, so that nothing of (T, B, H) but the states is kept; the backward recomputes
// the coefficients' derivatives from x_proj. kind 0: minGRU, rows z, h (G = 2); kind 1: minLSTM,
// rows f, i, h (G = 3). valid (T, B) uint8 or empty: padded steps have a = 1, b = 0.
namespace {

template <typename scalar_t>
inline scalar_t softplus(scalar_t x) {
  return std::max(x, scalar_t(0)) + std::log1p(std::exp(-std::abs(x)));
}

// g(x) = x + 1/2 for x >= 0, sigmoid(x) below (Feng et al.), and g'(x).
template <typename scalar_t>
inline scalar_t g_act(scalar_t x) {
  return x >= 0 ? x + scalar_t(0.5) : rnnlab::sigmoid(x);
}

template <typename scalar_t>
inline scalar_t g_prime(scalar_t x) {
  if (x >= 0) return scalar_t(1);
  const scalar_t s = rnnlab::sigmoid(x);
  return s * (1 - s);
}

// The coefficients of one element and, where d is given, the gradient of its inputs from
// those of a and b: k points at its first row's value, the rows H apart.
template <typename scalar_t>
inline void coefficients(int kind, const scalar_t* k, int64_t H, scalar_t& a, scalar_t& b,
                         const scalar_t* d = nullptr, scalar_t* dk = nullptr) {
  if (kind == 0) {  // a = 1 - z, b = z g(k_h)
    const scalar_t kz = k[0], kh = k[H];
    const scalar_t z = rnnlab::sigmoid(kz), gh = g_act(kh);
    a = rnnlab::sigmoid(-kz);
    b = z * gh;
    if (dk != nullptr) {  // d = {da, db}
      dk[0] = (d[1] * gh - d[0]) * z * (1 - z);
      dk[H] = d[1] * z * g_prime(kh);
    }
  } else {  // a = f' = sigmoid(-diff), b = i' g(k_h) with diff = log(i / f)
    const scalar_t kf = k[0], ki = k[H], kh = k[2 * H];
    const scalar_t diff = softplus(-kf) - softplus(-ki), gh = g_act(kh);
    a = rnnlab::sigmoid(-diff);
    const scalar_t ip = rnnlab::sigmoid(diff);
    b = ip * gh;
    if (dk != nullptr) {
      const scalar_t dd = (d[1] * gh - d[0]) * a * (1 - a);
      dk[0] = -dd * rnnlab::sigmoid(-kf);
      dk[H] = dd * rnnlab::sigmoid(-ki);
      dk[2 * H] = d[1] * ip * g_prime(kh);
    }
  }
}

}  // namespace

std::vector<at::Tensor> gated_scan_forward(at::Tensor x_proj, at::Tensor h0, at::Tensor valid,
                                           int64_t kind) {
  x_proj = x_proj.contiguous();
  h0 = h0.contiguous();
  const int64_t T = x_proj.size(0), B = h0.size(0), H = h0.size(1), G = kind == 0 ? 2 : 3;
  TORCH_CHECK(x_proj.size(2) == G * H, "gated_scan_forward: x_proj must be (T, B, G*H)");
  const bool has_valid = valid.defined() && valid.numel() > 0;
  const auto v8 = has_valid ? valid.to(at::kByte).contiguous() : at::Tensor();
  auto out = at::empty({T, B, H}, x_proj.options());
  auto h = h0.clone();
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "gated_scan_forward", [&] {
    const scalar_t* xp = x_proj.data_ptr<scalar_t>();
    const uint8_t* vp = has_valid ? v8.data_ptr<uint8_t>() : nullptr;
    scalar_t *hp = h.data_ptr<scalar_t>(), *op = out.data_ptr<scalar_t>();
    at::parallel_for(0, B * H, 1024, [&](int64_t n0, int64_t n1) {
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t n = n0; n < n1; ++n) {
          const int64_t b_ = n / H, k = n % H;
          if (vp == nullptr || vp[t * B + b_]) {
            scalar_t a, b;
            coefficients<scalar_t>(int(kind), xp + (t * B + b_) * G * H + k, H, a, b);
            hp[n] = a * hp[n] + b;
          }
          op[t * B * H + n] = hp[n];
        }
      }
    });
  });
  return {out, h};
}

// Given dH (T, B, H) and dhT, returns dx_proj and dh0; H is the forward's output.
std::vector<at::Tensor> gated_scan_backward(at::Tensor dH, at::Tensor dhT, at::Tensor x_proj,
                                            at::Tensor H_all, at::Tensor h0, at::Tensor valid,
                                            int64_t kind) {
  dH = dH.contiguous();
  x_proj = x_proj.contiguous();
  h0 = h0.contiguous();
  const int64_t T = x_proj.size(0), B = h0.size(0), H = h0.size(1), G = kind == 0 ? 2 : 3;
  const bool has_valid = valid.defined() && valid.numel() > 0;
  const auto v8 = has_valid ? valid.to(at::kByte).contiguous() : at::Tensor();
  auto dx = at::empty_like(x_proj);
  auto g = dhT.contiguous().clone();
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "gated_scan_backward", [&] {
    const scalar_t *xp = x_proj.data_ptr<scalar_t>(), *dp = dH.data_ptr<scalar_t>();
    const scalar_t *hs = H_all.data_ptr<scalar_t>(), *h0p = h0.data_ptr<scalar_t>();
    const uint8_t* vp = has_valid ? v8.data_ptr<uint8_t>() : nullptr;
    scalar_t *gp = g.data_ptr<scalar_t>(), *dxp = dx.data_ptr<scalar_t>();
    at::parallel_for(0, B * H, 1024, [&](int64_t n0, int64_t n1) {
      for (int64_t t = T - 1; t >= 0; --t) {
        for (int64_t n = n0; n < n1; ++n) {
          const int64_t b_ = n / H, k = n % H;
          const int64_t at_k = (t * B + b_) * G * H + k;
          const scalar_t gt = gp[n] + dp[t * B * H + n];
          if (vp != nullptr && !vp[t * B + b_]) {  // a = 1, b = 0: the gradient carries over
            for (int64_t r = 0; r < G; ++r) dxp[at_k + r * H] = 0;
            gp[n] = gt;
            continue;
          }
          const scalar_t prev = t > 0 ? hs[(t - 1) * B * H + n] : h0p[n];
          const scalar_t d[2] = {gt * prev, gt};  // da, db
          scalar_t a, b;
          coefficients<scalar_t>(int(kind), xp + at_k, H, a, b, d, dxp + at_k);
          gp[n] = gt * a;
        }
      }
    });
  });
  return {dx, g};
}
