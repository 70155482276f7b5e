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
  return std::max(x, scalar_t(0)) + std::log(scalar_t(1) + std::exp(-std::abs(x)));
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

// One (t, b) row of H units, the kind (0: minGRU, 1: minLSTM) a template argument and the rows
// of x (its gate blocks, H apart) read contiguously, so that the loops vectorise.
template <int KIND, typename scalar_t>
inline void coefficients(const scalar_t* x, int64_t k, int64_t H, scalar_t& a, scalar_t& b) {
  if (KIND == 0) {  // a = 1 - z, b = z g(k_h)
    a = rnnlab::sigmoid(-x[k]);
    b = rnnlab::sigmoid(x[k]) * g_act(x[H + k]);
  } else {  // a = f' = sigmoid(-diff), b = i' g(k_h) with diff = log(i / f)
    const scalar_t diff = softplus(-x[k]) - softplus(-x[H + k]);
    a = rnnlab::sigmoid(-diff);
    b = rnnlab::sigmoid(diff) * g_act(x[2 * H + k]);
  }
}

template <int KIND, typename scalar_t>
void forward_row(const scalar_t* x, int64_t H, scalar_t* h, scalar_t* out) {
  for (int64_t k = 0; k < H; ++k) {
    scalar_t a, b;
    coefficients<KIND>(x, k, H, a, b);
    h[k] = a * h[k] + b;
    out[k] = h[k];
  }
}

// g (B's row of the running gradient of h) takes in dH_t and goes back through step t to
// h_{t-1}; dx gets x's gradient from da = g prev and db = g.
template <int KIND, typename scalar_t>
void backward_row(const scalar_t* x, int64_t H, const scalar_t* prev, const scalar_t* dHt,
                  scalar_t* g, scalar_t* dx) {
  for (int64_t k = 0; k < H; ++k) {
    const scalar_t gt = g[k] + dHt[k], da = gt * prev[k], db = gt;
    scalar_t a;
    if (KIND == 0) {  // da/dk_z = -z (1 - z), db/dk_z = z (1 - z) g, db/dk_h = z g'
      const scalar_t kz = x[k], kh = x[H + k];
      const scalar_t z = rnnlab::sigmoid(kz), gh = g_act(kh);
      a = rnnlab::sigmoid(-kz);
      dx[k] = (db * gh - da) * z * (1 - z);
      dx[H + k] = db * z * g_prime(kh);
    } else {  // da/dd = -a (1 - a), db/dd = a (1 - a) g; dd/dk_f = -(1 - f), dd/dk_i = 1 - i
      const scalar_t kf = x[k], ki = x[H + k], kh = x[2 * H + k];
      const scalar_t diff = softplus(-kf) - softplus(-ki), gh = g_act(kh);
      a = rnnlab::sigmoid(-diff);
      const scalar_t ip = rnnlab::sigmoid(diff), dd = (db * gh - da) * a * (1 - a);
      dx[k] = -dd * rnnlab::sigmoid(-kf);
      dx[H + k] = dd * rnnlab::sigmoid(-ki);
      dx[2 * H + k] = db * ip * g_prime(kh);
    }
    g[k] = gt * a;
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
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t b = b0; b < b1; ++b) {
          const scalar_t* x = xp + (t * B + b) * G * H;
          scalar_t *hb = hp + b * H, *ob = op + (t * B + b) * H;
          if (vp != nullptr && !vp[t * B + b]) {  // padding: the state carries over
            std::copy(hb, hb + H, ob);
          } else if (kind == 0) {
            forward_row<0>(x, H, hb, ob);
          } else {
            forward_row<1>(x, H, hb, ob);
          }
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
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t t = T - 1; t >= 0; --t) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t row = t * B + b;
          scalar_t *gb = gp + b * H, *dx_row = dxp + row * G * H;
          const scalar_t* dHt = dp + row * H;
          if (vp != nullptr && !vp[row]) {  // a = 1, b = 0: the gradient carries over
            std::fill(dx_row, dx_row + G * H, scalar_t(0));
            for (int64_t k = 0; k < H; ++k) gb[k] += dHt[k];
            continue;
          }
          const scalar_t* prev = t > 0 ? hs + ((t - 1) * B + b) * H : h0p + b * H;
          if (kind == 0) {
            backward_row<0>(xp + row * G * H, H, prev, dHt, gb, dx_row);
          } else {
            backward_row<1>(xp + row * G * H, H, prev, dHt, gb, dx_row);
          }
        }
      }
    });
  });
  return {dx, g};
}
