// Fused CPU kernels of adLIF and RadLIF (Bittar & Garner 2022; cells/spiking.py, whose step loop
// is the reference these kernels are tested against). Per step and neuron, with the clamped
// per-neuron alpha, beta, a, b and, for RadLIF, V (the caller zeroes its diagonal):
//
//   w_t = beta w_{t-1} + a u_{t-1} + b s_{t-1}
//   d_t = I_t - w_t + V (m * s_{t-1})          (the drive; RadLIF only adds V (m * s))
//   u_t = alpha (u_{t-1} - s_{t-1}) + (1 - alpha) d_t
//   s_t = H(u_t - 1)                           (H(0) = 0)
//
// with I_t = x_proj from the caller (the input product and its batch norm stay in PyTorch) and m
// the recurrent-dropout mask (B, H), or none. The backward uses the box-car surrogate
// d s / d u := 1 where -0.5 < u - 1 <= 0.5. Clamps and V's zeroed diagonal are PyTorch's,
// outside, so autograd carries the gradients returned here through them.
//
// The forward's recurrent product reads the spikes: m * s_{t-1} is zero wherever a neuron did
// not spike, so V (m * s) is a sum of V's columns over the row's spiking neurons (at spike rates
// of 5 to 30 %, a fraction of a dense product's work). The backward's d s_{t-1} = m * (V^T g) is
// dense (g is), one packed product per step (packed_gemm.h); dV after the loop, a chunk of steps
// at a time (weight_grad.h), from the saved spikes. valid (T, B) uint8 marks a prefix of each
// column: padded steps carry the state and output zero, so the state before a valid step t > 0
// is step t - 1's output and acts.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include "packed_gemm.h"
#include "weight_grad.h"

#include <algorithm>
#include <optional>
#include <vector>

namespace {

inline bool given(const at::Tensor& t) { return t.defined() && t.numel() > 0; }

// Step t's row of valid, or nullptr where every step is valid.
inline const uint8_t* valid_at(const at::Tensor& valid_u8, int64_t t) {
  return valid_u8.defined() ? valid_u8.data_ptr<uint8_t>() + t * valid_u8.size(1) : nullptr;
}

// Step t's (B, n) block of a contiguous (T, B, n) tensor, by arithmetic: a select per tensor and
// step (about 1.5 us each) was a twentieth of adLIF's forward+backward.
template <typename T>
inline T* step_of(const at::Tensor& x, int64_t t) {
  return x.data_ptr<T>() + t * x.size(1) * x.size(2);
}

// The per-neuron coefficients, contiguous.
template <typename T>
struct Coefficients {
  const T *alpha, *beta, *a, *b;
};

#define R_ __restrict__

// One batch row's step: rec the row's V (m * s_{t-1}) (RadLIF, read only where Recurrent: GCC
// left the loop scalar when it tested a pointer for null instead); act the row's (u, w, d).
template <typename T, bool Recurrent>
void spiking_row(int64_t H, Coefficients<T> c, const T* R_ x, const T* R_ rec, const T* R_ s_prev,
                 const T* R_ u_prev, const T* R_ w_prev, T* R_ s, T* R_ u, T* R_ w, T* R_ act,
                 T* R_ out) {
  for (int64_t k = 0; k < H; ++k) {
    const T wk = c.beta[k] * w_prev[k] + c.a[k] * u_prev[k] + c.b[k] * s_prev[k];
    T d = x[k] - wk;
    if (Recurrent) d += rec[k];
    const T uk = c.alpha[k] * (u_prev[k] - s_prev[k]) + (1 - c.alpha[k]) * d;
    const T sk = uk - 1 > 0 ? T(1) : T(0);
    act[k] = uk;
    act[H + k] = wk;
    act[2 * H + k] = d;
    u[k] = uk;
    w[k] = wk;
    s[k] = sk;
    out[k] = sk;
  }
}

// One batch row's backward step: ds, du, dw the gradients reaching s_t, u_t, w_t from later
// steps, dY the output's; writes those of s_{t-1} (without the recurrent product's part, added
// after it), u_{t-1} and w_{t-1}, d x_t and d(V m s_{t-1}) (dp, or null for adLIF); accumulates
// the coefficients' gradients of this row in double (d_alpha, d_beta, d_a, d_b, H each).
template <typename T, bool Recurrent>
void spiking_row_backward(int64_t H, Coefficients<T> c, const T* R_ act, const T* R_ s_prev,
                          const T* R_ u_prev, const T* R_ w_prev, const T* R_ ds, const T* R_ dY,
                          const T* R_ du, const T* R_ dw, T* R_ ds_prev, T* R_ du_prev,
                          T* R_ dw_prev, T* R_ dx, T* R_ dp, double* R_ d_alpha,
                          double* R_ d_beta, double* R_ d_a, double* R_ d_b) {
  const T *R_ u = act, *R_ d = act + 2 * H;
  for (int64_t k = 0; k < H; ++k) {
    const T v = u[k] - 1;
    const T surrogate = v > T(-0.5) && v <= T(0.5) ? T(1) : T(0);
    const T gu = du[k] + (ds[k] + dY[k]) * surrogate;
    // u = alpha (u' - s') + (1 - alpha) d, d = x - w + V m s'
    const T gd = gu * (1 - c.alpha[k]);
    dx[k] = gd;
    if (Recurrent) dp[k] = gd;
    d_alpha[k] += gu * (u_prev[k] - s_prev[k] - d[k]);
    // w = beta w' + a u' + b s'
    const T gw = dw[k] - gd;
    d_beta[k] += gw * w_prev[k];
    d_a[k] += gw * u_prev[k];
    d_b[k] += gw * s_prev[k];
    du_prev[k] = gu * c.alpha[k] + gw * c.a[k];
    dw_prev[k] = gw * c.beta[k];
    ds_prev[k] = gw * c.b[k] - gu * c.alpha[k];
  }
}

#undef R_

template <typename T>
Coefficients<T> coefficients(const std::vector<at::Tensor>& c) {
  return {c[0].data_ptr<T>(), c[1].data_ptr<T>(), c[2].data_ptr<T>(), c[3].data_ptr<T>()};
}

}  // namespace

// acts (T, B, 3H): u_t, w_t and the drive d_t (alpha's gradient reads it).
std::vector<at::Tensor> spiking_forward(at::Tensor x_proj, at::Tensor alpha, at::Tensor beta,
                                        at::Tensor a, at::Tensor b, at::Tensor V, at::Tensor s0,
                                        at::Tensor u0, at::Tensor w0, at::Tensor valid,
                                        at::Tensor rmask, bool save) {
  x_proj = x_proj.contiguous();
  const int64_t T = x_proj.size(0), B = x_proj.size(1), H = x_proj.size(2);
  const auto opts = x_proj.options();
  const auto valid_u8 = given(valid) ? valid.to(at::kByte).contiguous() : at::Tensor();
  const bool recurrent = given(V), has_mask = recurrent && given(rmask);
  const auto mask = has_mask ? rmask.contiguous() : at::Tensor();
  // V^T: row j holds the column of V that a spike of neuron j adds.
  const auto VT = recurrent ? V.t().contiguous() : at::Tensor();
  const std::vector<at::Tensor> coef = {alpha.contiguous(), beta.contiguous(), a.contiguous(),
                                        b.contiguous()};
  auto Y = at::empty({T, B, H}, opts);
  auto acts = at::empty({save ? T : 1, B, 3 * H}, opts);
  auto s = s0.contiguous().clone(), u = u0.contiguous().clone(), w = w0.contiguous().clone();
  auto s_next = at::empty_like(s), u_next = at::empty_like(u), w_next = at::empty_like(w);
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "spiking_forward", [&] {
    const auto c = coefficients<scalar_t>(coef);
    const scalar_t* vt = recurrent ? VT.data_ptr<scalar_t>() : nullptr;
    const scalar_t* mp = has_mask ? mask.data_ptr<scalar_t>() : nullptr;
    for (int64_t t = 0; t < T; ++t) {
      const scalar_t *xt = step_of<scalar_t>(x_proj, t), *sp = s.data_ptr<scalar_t>();
      const scalar_t *up = u.data_ptr<scalar_t>(), *wp = w.data_ptr<scalar_t>();
      scalar_t *sn = s_next.data_ptr<scalar_t>(), *un = u_next.data_ptr<scalar_t>();
      scalar_t *wn = w_next.data_ptr<scalar_t>(), *out = step_of<scalar_t>(Y, t);
      scalar_t* ac = step_of<scalar_t>(acts, save ? t : 0);
      const uint8_t* vld = valid_at(valid_u8, t);
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        std::vector<scalar_t> rec(recurrent ? H : 0);
        for (int64_t r = b0; r < b1; ++r) {
          const int64_t o = r * H;
          if (vld != nullptr && !vld[r]) {  // acts zeroed: an output, it must be deterministic
            std::copy(sp + o, sp + o + H, sn + o);
            std::copy(up + o, up + o + H, un + o);
            std::copy(wp + o, wp + o + H, wn + o);
            std::fill(out + o, out + o + H, scalar_t(0));
            std::fill(ac + r * 3 * H, ac + (r + 1) * 3 * H, scalar_t(0));
            continue;
          }
          if (recurrent) {  // V (m * s_{t-1}): V's columns of the spiking neurons
            std::fill(rec.begin(), rec.end(), scalar_t(0));
            scalar_t* acc = rec.data();
            for (int64_t j = 0; j < H; ++j) {
              if (sp[o + j] == 0) continue;
              const scalar_t g = mp != nullptr ? sp[o + j] * mp[o + j] : sp[o + j];
              if (g == 0) continue;
              const scalar_t* col = vt + j * H;
              for (int64_t k = 0; k < H; ++k) acc[k] += g * col[k];
            }
          }
          const auto row = recurrent ? spiking_row<scalar_t, true> : spiking_row<scalar_t, false>;
          row(H, c, xt + o, rec.data(), sp + o, up + o, wp + o, sn + o, un + o, wn + o,
              ac + r * 3 * H, out + o);
        }
      });
      std::swap(s, s_next);
      std::swap(u, u_next);
      std::swap(w, w_next);
    }
  });
  if (!save) acts = at::empty({0}, opts);
  return {Y, s, u, w, acts};
}

// Gradients of x_proj, alpha, beta, a, b, V (empty for adLIF) and the initial s, u, w.
std::vector<at::Tensor> spiking_backward(at::Tensor dY, at::Tensor dsT, at::Tensor duT,
                                         at::Tensor dwT, at::Tensor acts, at::Tensor Y,
                                         at::Tensor s0, at::Tensor u0, at::Tensor w0,
                                         at::Tensor alpha, at::Tensor beta, at::Tensor a,
                                         at::Tensor b, at::Tensor V, at::Tensor valid,
                                         at::Tensor rmask) {
  dY = dY.contiguous();
  acts = acts.contiguous();
  Y = Y.contiguous();
  const int64_t T = dY.size(0), B = dY.size(1), H = dY.size(2);
  const auto opts = dY.options();
  const auto valid_u8 = given(valid) ? valid.to(at::kByte).contiguous() : at::Tensor();
  const bool recurrent = given(V), has_mask = recurrent && given(rmask);
  const auto mask = has_mask ? rmask.contiguous() : at::Tensor();
  const auto s_first = s0.contiguous(), u_first = u0.contiguous(), w_first = w0.contiguous();
  const std::vector<at::Tensor> coef = {alpha.contiguous(), beta.contiguous(), a.contiguous(),
                                        b.contiguous()};
  auto dX = at::empty({T, B, H}, opts);  // every row written below
  auto ds = dsT.contiguous().clone(), du = duT.contiguous().clone(), dw = dwT.contiguous().clone();
  auto ds_next = at::empty_like(ds), du_next = at::empty_like(du), dw_next = at::empty_like(dw);
  auto back_rows = recurrent ? at::empty_like(ds) : at::Tensor();
  // The coefficients' gradients, one row per batch row, in double: (4, B, H).
  auto d_coef = at::zeros({4, B, H}, opts.dtype(at::kDouble));
  // dV = sum_t dP_t^T (m * s_{t-1}): Y read shifted, s0 first.
  std::optional<rnnlab::ChunkedWeightGrad> dV_chunks;
  std::optional<rnnlab::PackedProduct> back;  // dP_t V
  if (recurrent) {
    dV_chunks.emplace(T, B, H, std::vector<rnnlab::ChunkedWeightGrad::Block>{{0, H, Y, s_first,
                                                                               mask}},
                      opts);
    back.emplace(V, false);
  }
  AT_DISPATCH_FLOATING_TYPES(dY.scalar_type(), "spiking_backward", [&] {
    const auto c = coefficients<scalar_t>(coef);
    double* dc = d_coef.data_ptr<double>();
    const int64_t BH = B * H;
    for (int64_t t = T - 1; t >= 0; --t) {
      const uint8_t* vld = valid_at(valid_u8, t);
      const scalar_t *ac = step_of<scalar_t>(acts, t), *dYt = step_of<scalar_t>(dY, t);
      const scalar_t* sp = t == 0 ? s_first.data_ptr<scalar_t>() : step_of<scalar_t>(Y, t - 1);
      const scalar_t* up = t == 0 ? u_first.data_ptr<scalar_t>() : step_of<scalar_t>(acts, t - 1);
      const scalar_t* wp = t == 0 ? w_first.data_ptr<scalar_t>() : up + H;
      const int64_t prev_stride = t == 0 ? H : 3 * H;  // a row of s0 / u0 or of acts
      const scalar_t *dsp = ds.data_ptr<scalar_t>(), *dup = du.data_ptr<scalar_t>();
      const scalar_t* dwp = dw.data_ptr<scalar_t>();
      scalar_t *dsn = ds_next.data_ptr<scalar_t>(), *dun = du_next.data_ptr<scalar_t>();
      scalar_t *dwn = dw_next.data_ptr<scalar_t>(), *dx = step_of<scalar_t>(dX, t);
      at::Tensor dP_t = recurrent ? dV_chunks->slot(t) : at::Tensor();
      scalar_t* dp = recurrent ? dP_t.data_ptr<scalar_t>() : nullptr;
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t r = b0; r < b1; ++r) {
          const int64_t o = r * H;
          if (vld != nullptr && !vld[r]) {  // padding: the gradients pass to the carried state
            std::fill(dx + o, dx + o + H, scalar_t(0));
            if (dp != nullptr) std::fill(dp + o, dp + o + H, scalar_t(0));
            std::copy(dsp + o, dsp + o + H, dsn + o);
            std::copy(dup + o, dup + o + H, dun + o);
            std::copy(dwp + o, dwp + o + H, dwn + o);
            continue;
          }
          const auto row = recurrent ? spiking_row_backward<scalar_t, true>
                                     : spiking_row_backward<scalar_t, false>;
          row(H, c, ac + r * 3 * H, sp + o, up + r * prev_stride, wp + r * prev_stride,
              dsp + o, dYt + o, dup + o, dwp + o, dsn + o, dun + o, dwn + o, dx + o,
              dp != nullptr ? dp + o : nullptr, dc + o, dc + BH + o, dc + 2 * BH + o,
              dc + 3 * BH + o);
        }
      });
      if (recurrent) {  // d s_{t-1} += m * (dP_t V); padded rows' dP_t is zero
        (*back)(back_rows, dP_t);
        dV_chunks->done(t);
        const scalar_t* br = back_rows.data_ptr<scalar_t>();
        const scalar_t* mp = has_mask ? mask.data_ptr<scalar_t>() : nullptr;
        if (mp != nullptr) {
          for (int64_t k = 0; k < BH; ++k) dsn[k] += br[k] * mp[k];
        } else {
          for (int64_t k = 0; k < BH; ++k) dsn[k] += br[k];
        }
      }
      std::swap(ds, ds_next);
      std::swap(du, du_next);
      std::swap(dw, dw_next);
    }
  });
  const auto d = d_coef.sum(1).to(dY.scalar_type());  // (4, H)
  const auto dV = recurrent ? dV_chunks->result() : at::empty({0}, opts);
  return {dX, d[0], d[1], d[2], d[3], dV, ds, du, dw};
}

void register_spiking(pybind11::module& m) {
  using release = pybind11::call_guard<pybind11::gil_scoped_release>;
  m.def("spiking_forward", &spiking_forward, "fused adLIF / RadLIF forward (CPU)", release());
  m.def("spiking_backward", &spiking_backward,
        "fused adLIF / RadLIF backward, box-car surrogate (CPU)", release());
}
