// Fused CPU kernels of the uBRU (Bittar & Garner 2022; cells/bru.py holds the equations and the
// step loop these kernels are tested against): the filter recursion over the steps and the
// smoothing (backward) recursion of the forward-backward algorithm, each with its backward.
//
// The uBRU has no recurrent product: x_proj = W x comes from one product outside, and every unit
// runs its own scalar recursion. A kernel therefore runs each batch row through all its steps at
// once (rows in parallel, units vectorised), one call for the whole sequence instead of a dozen
// small PyTorch operations a step. p1 = sigmoid(theta_1) and p2 = sigmoid(theta_2) (H) come
// from the caller, which differentiates the sigmoid; their gradients are summed over the steps
// per batch row in double, then over the rows.
//
// - Filter: q_t = p1 a_{t-1} + p2 (1 - a_{t-1}), r_t = exp(min(x_t, 10)),
//   a_t = q_t / (q_t + r_t (1 - q_t) + 1e-11). valid (T, B) marks the steps that run: a padded
//   step keeps the state and outputs 0, as the step loop. The backward reads a_{t-1} from the
//   outputs (the previous valid step's, or a_0), so nothing besides the outputs is saved.
// - Smoothing: from each row's last valid step L - 1 backwards, gamma_{L-1} = a_{L-1},
//   gamma_t = a_t (p1 gamma_{t+1} / q_{t+1} + (1 - p1)(1 - gamma_{t+1}) / (1 - q_{t+1})) with
//   q_{t+1} = p1 a_t + p2 (1 - a_t); steps from L on output 0. lengths (B) int64, or empty for
//   all T; the recursion walks each row within its own length, no reversed copies.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr double kEps = 1e-11;  // the step's EPS
constexpr double kClamp = 10.0;  // r_t = exp(min(x_t, 10))

inline bool given(const at::Tensor& t) { return t.defined() && t.numel() > 0; }

// NaN by its bits: -ffast-math folds std::isnan(x) and x != x to false, and lets min(NaN, 10)
// be 10. A NaN of x_t must reach a_t (and the loss) as on the step loop.
inline bool is_nan(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return (bits & 0x7fffffffu) > 0x7f800000u;
}
inline bool is_nan(double x) {
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return (bits & 0x7fffffffffffffffull) > 0x7ff0000000000000ull;
}

// min(x, 10), NaN kept; and whether the clamp passes x's gradient (x <= 10; not at a NaN, as
// torch's clamp).
template <typename T>
inline T clamped(T x) {
  return is_nan(x) ? x : std::min(x, T(kClamp));
}
template <typename T>
inline bool passes(T x) {
  return x <= T(kClamp) && !is_nan(x);
}

// The units of one batch row never alias one another's buffers; saying so lets GCC vectorise.
#define R_ __restrict__

// One valid filter step of one batch row: a = q / (q + r (1 - q) + eps).
template <typename T>
void filter_row(int64_t H, const T* R_ x, const T* R_ p1, const T* R_ p2, const T* R_ a_prev,
                T* R_ a) {
  for (int64_t k = 0; k < H; ++k) {
    const T q = p1[k] * a_prev[k] + p2[k] * (1 - a_prev[k]);
    const T r = std::exp(clamped(x[k]));
    a[k] = q / (q + r * (1 - q) + T(kEps));
  }
}

// Its backward: da the gradient reaching a_t from later steps (in), then a_{t-1}'s (out).
// With D = q + r (1 - q) + eps: da/dq = (r + eps) / D^2, da/dr = -q (1 - q) / D^2; the clamp
// passes the gradient where x <= 10, as torch's.
template <typename T>
void filter_row_backward(int64_t H, const T* R_ x, const T* R_ p1, const T* R_ p2,
                         const T* R_ a_prev, const T* R_ dY, T* R_ da, T* R_ dx,
                         double* R_ dp1, double* R_ dp2) {
  for (int64_t k = 0; k < H; ++k) {
    const T ap = a_prev[k];
    const T q = p1[k] * ap + p2[k] * (1 - ap);
    const T r = std::exp(clamped(x[k]));
    const T D = q + r * (1 - q) + T(kEps);
    const T g_D2 = (da[k] + dY[k]) / (D * D);
    const T dq = g_D2 * (r + T(kEps));
    dx[k] = passes(x[k]) ? -g_D2 * q * (1 - q) * r : T(0);
    dp1[k] += dq * ap;
    dp2[k] += dq * (1 - ap);
    da[k] = dq * (p1[k] - p2[k]);
  }
}

// One smoothing step of one batch row: gamma_t from a_t and gamma_{t+1} (g).
template <typename T>
void smooth_row(int64_t H, const T* R_ a, const T* R_ g, const T* R_ p1, const T* R_ p2,
                T* R_ gamma) {
  for (int64_t k = 0; k < H; ++k) {
    const T q = p1[k] * a[k] + p2[k] * (1 - a[k]);
    gamma[k] = a[k] * (p1[k] * g[k] / q + (1 - p1[k]) * (1 - g[k]) / (1 - q));
  }
}

// Its backward, walked forwards in t: carry the gradient reaching gamma_t from gamma_{t-1} (in),
// then gamma_{t+1}'s (out); dA gets a_t's gradient.
template <typename T>
void smooth_row_backward(int64_t H, const T* R_ a, const T* R_ g, const T* R_ p1, const T* R_ p2,
                         const T* R_ dG, T* R_ carry, T* R_ dA, double* R_ dp1,
                         double* R_ dp2) {
  for (int64_t k = 0; k < H; ++k) {
    const T G = dG[k] + carry[k];
    const T ak = a[k], gk = g[k];
    const T q = p1[k] * ak + p2[k] * (1 - ak);
    const T u = p1[k] / q, v = (1 - p1[k]) / (1 - q);
    const T S = u * gk + v * (1 - gk);  // gamma_t = a_t S
    const T dS = G * ak;
    carry[k] = dS * (u - v);
    const T dq = dS * (v * (1 - gk) / (1 - q) - u * gk / q);
    dp1[k] += dS * (gk / q - (1 - gk) / (1 - q)) + dq * ak;
    dp2[k] += dq * (1 - ak);
    dA[k] = G * S + dq * (p1[k] - p2[k]);
  }
}

#undef R_

// valid (T, B) as bytes, or undefined where every step is valid.
at::Tensor as_bytes(const at::Tensor& valid) {
  return given(valid) ? valid.to(at::kByte).contiguous() : at::Tensor();
}

// Each row's length, clamped to [0, T]; T for all where none are given.
std::vector<int64_t> row_lengths(const at::Tensor& lengths, int64_t T, int64_t B) {
  std::vector<int64_t> out(B, T);
  if (!given(lengths)) return out;
  const auto l = lengths.to(at::kLong).contiguous();
  const int64_t* lp = l.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) out[b] = std::clamp<int64_t>(lp[b], 0, T);
  return out;
}

// The (B, H) rows of a per-row gradient summed over the batch, in the given type.
at::Tensor row_sum(const at::Tensor& rows, at::ScalarType type) { return rows.sum(0).to(type); }

}  // namespace

// (Y (T, B, H), a_T (B, H)): the filtered posteriors, 0 on padded steps, and each row's state
// after its last valid step.
std::vector<at::Tensor> bru_filter_forward(at::Tensor x_proj, at::Tensor p1, at::Tensor p2,
                                           at::Tensor a0, at::Tensor valid) {
  x_proj = x_proj.contiguous();
  const int64_t T = x_proj.size(0), B = x_proj.size(1), H = x_proj.size(2);
  const auto valid_u8 = as_bytes(valid);
  const auto P1 = p1.contiguous(), P2 = p2.contiguous(), A0 = a0.contiguous();
  auto Y = at::empty({T, B, H}, x_proj.options());
  auto aT = at::empty({B, H}, x_proj.options());
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "bru_filter_forward", [&] {
    const scalar_t *x = x_proj.data_ptr<scalar_t>(), *a0p = A0.data_ptr<scalar_t>();
    const scalar_t *p1p = P1.data_ptr<scalar_t>(), *p2p = P2.data_ptr<scalar_t>();
    const uint8_t* vp = valid_u8.defined() ? valid_u8.data_ptr<uint8_t>() : nullptr;
    scalar_t *y = Y.data_ptr<scalar_t>(), *aTp = aT.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const scalar_t* prev = a0p + b * H;  // the state: a_0, then the last valid output
        for (int64_t t = 0; t < T; ++t) {
          scalar_t* out = y + (t * B + b) * H;
          if (vp != nullptr && !vp[t * B + b]) {
            std::fill(out, out + H, scalar_t(0));
            continue;
          }
          filter_row<scalar_t>(H, x + (t * B + b) * H, p1p, p2p, prev, out);
          prev = out;
        }
        std::copy(prev, prev + H, aTp + b * H);
      }
    });
  });
  return {Y, aT};
}

// (d x_proj, d p1, d p2, d a_0) from the gradients of Y and of a_T.
std::vector<at::Tensor> bru_filter_backward(at::Tensor dY, at::Tensor daT, at::Tensor x_proj,
                                            at::Tensor Y, at::Tensor p1, at::Tensor p2,
                                            at::Tensor a0, at::Tensor valid) {
  dY = dY.contiguous();
  x_proj = x_proj.contiguous();
  Y = Y.contiguous();
  const int64_t T = x_proj.size(0), B = x_proj.size(1), H = x_proj.size(2);
  const auto opts = x_proj.options();
  const auto valid_u8 = as_bytes(valid);
  const auto P1 = p1.contiguous(), P2 = p2.contiguous(), A0 = a0.contiguous();
  auto dX = at::empty({T, B, H}, opts);
  auto da = daT.contiguous().clone();  // per row: the gradient reaching the state, from a_T back
  auto dp_rows = at::zeros({2, B, H}, opts.dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "bru_filter_backward", [&] {
    const scalar_t *x = x_proj.data_ptr<scalar_t>(), *y = Y.data_ptr<scalar_t>();
    const scalar_t *dy = dY.data_ptr<scalar_t>(), *a0p = A0.data_ptr<scalar_t>();
    const scalar_t *p1p = P1.data_ptr<scalar_t>(), *p2p = P2.data_ptr<scalar_t>();
    const uint8_t* vp = valid_u8.defined() ? valid_u8.data_ptr<uint8_t>() : nullptr;
    scalar_t *dx = dX.data_ptr<scalar_t>(), *dap = da.data_ptr<scalar_t>();
    double* dp1 = dp_rows.data_ptr<double>();
    double* dp2 = dp1 + B * H;
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<int64_t> prev(T);  // each valid step's previous valid step, or -1 (a_0)
      for (int64_t b = b0; b < b1; ++b) {
        int64_t last = -1;
        for (int64_t t = 0; t < T; ++t) {
          if (vp != nullptr && !vp[t * B + b]) continue;
          prev[t] = last;
          last = t;
        }
        for (int64_t t = T - 1; t >= 0; --t) {
          const int64_t o = (t * B + b) * H;
          if (vp != nullptr && !vp[t * B + b]) {  // the state passes through, and its gradient
            std::fill(dx + o, dx + o + H, scalar_t(0));
            continue;
          }
          const scalar_t* a_prev = prev[t] < 0 ? a0p + b * H : y + (prev[t] * B + b) * H;
          filter_row_backward<scalar_t>(H, x + o, p1p, p2p, a_prev, dy + o, dap + b * H, dx + o,
                                        dp1 + b * H, dp2 + b * H);
        }
      }
    });
  });
  const auto type = x_proj.scalar_type();
  return {dX, row_sum(dp_rows[0], type), row_sum(dp_rows[1], type), da};
}

// Gamma (T, B, H): the smoothed posteriors of the filtered A (T, B, H), 0 past each length.
at::Tensor bru_smooth_forward(at::Tensor A, at::Tensor p1, at::Tensor p2, at::Tensor lengths) {
  A = A.contiguous();
  const int64_t T = A.size(0), B = A.size(1), H = A.size(2);
  const auto L = row_lengths(lengths, T, B);
  const auto P1 = p1.contiguous(), P2 = p2.contiguous();
  auto Gamma = at::empty({T, B, H}, A.options());
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "bru_smooth_forward", [&] {
    const scalar_t *a = A.data_ptr<scalar_t>(), *p1p = P1.data_ptr<scalar_t>();
    const scalar_t* p2p = P2.data_ptr<scalar_t>();
    scalar_t* gamma = Gamma.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t t = L[b]; t < T; ++t)
          std::fill(gamma + (t * B + b) * H, gamma + (t * B + b + 1) * H, scalar_t(0));
        if (L[b] == 0) continue;
        const int64_t last = (L[b] - 1) * B + b;
        std::copy(a + last * H, a + (last + 1) * H, gamma + last * H);
        for (int64_t t = L[b] - 2; t >= 0; --t) {
          const int64_t o = (t * B + b) * H;
          smooth_row<scalar_t>(H, a + o, gamma + o + B * H, p1p, p2p, gamma + o);
        }
      }
    });
  });
  return Gamma;
}

// (d A, d p1, d p2) from the gradient of Gamma.
std::vector<at::Tensor> bru_smooth_backward(at::Tensor dGamma, at::Tensor A, at::Tensor Gamma,
                                            at::Tensor p1, at::Tensor p2, at::Tensor lengths) {
  dGamma = dGamma.contiguous();
  A = A.contiguous();
  Gamma = Gamma.contiguous();
  const int64_t T = A.size(0), B = A.size(1), H = A.size(2);
  const auto L = row_lengths(lengths, T, B);
  const auto P1 = p1.contiguous(), P2 = p2.contiguous();
  auto dA = at::empty({T, B, H}, A.options());
  auto carry = at::zeros({B, H}, A.options());  // per row: the gradient reaching gamma_t
  auto dp_rows = at::zeros({2, B, H}, A.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "bru_smooth_backward", [&] {
    const scalar_t *a = A.data_ptr<scalar_t>(), *gamma = Gamma.data_ptr<scalar_t>();
    const scalar_t *dg = dGamma.data_ptr<scalar_t>(), *p1p = P1.data_ptr<scalar_t>();
    const scalar_t* p2p = P2.data_ptr<scalar_t>();
    scalar_t *da = dA.data_ptr<scalar_t>(), *cp = carry.data_ptr<scalar_t>();
    double* dp1 = dp_rows.data_ptr<double>();
    double* dp2 = dp1 + B * H;
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t t = L[b]; t < T; ++t)
          std::fill(da + (t * B + b) * H, da + (t * B + b + 1) * H, scalar_t(0));
        if (L[b] == 0) continue;
        scalar_t* c = cp + b * H;
        for (int64_t t = 0; t < L[b] - 1; ++t) {
          const int64_t o = (t * B + b) * H;
          smooth_row_backward<scalar_t>(H, a + o, gamma + o + B * H, p1p, p2p, dg + o, c, da + o,
                                        dp1 + b * H, dp2 + b * H);
        }
        const int64_t o = ((L[b] - 1) * B + b) * H;  // gamma_{L-1} = a_{L-1}
        for (int64_t k = 0; k < H; ++k) da[o + k] = dg[o + k] + c[k];
      }
    });
  });
  const auto type = A.scalar_type();
  return {dA, row_sum(dp_rows[0], type), row_sum(dp_rows[1], type)};
}

void register_bru(pybind11::module& m) {
  // The kernels touch no Python object: they release the GIL, as module.cpp's.
  using release = pybind11::call_guard<pybind11::gil_scoped_release>;
  m.def("bru_filter_forward", &bru_filter_forward, "uBRU filter recursion (CPU)", release());
  m.def("bru_filter_backward", &bru_filter_backward, "its backward (CPU)", release());
  m.def("bru_smooth_forward", &bru_smooth_forward, "uBRU smoothing recursion (CPU)", release());
  m.def("bru_smooth_backward", &bru_smooth_backward, "its backward (CPU)", release());
}
