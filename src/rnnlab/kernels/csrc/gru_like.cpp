// Fused CPU kernels for the GRU-like cells of issue 18: EGRU (Subramoney et al. 2023), the latent
// recurrence of GateL0RD (Gumbsch et al. 2021) and NC-GRU (Mucllari et al. 2022). The equations
// are in the cells' docstrings (cells/egru.py, gatel0rd.py, ncgru.py); the step loop there is the
// reference these kernels are tested against.
//
// The scheme of gru.cpp: x_proj = W x + b for all steps comes from the caller; per step one
// recurrent product (M packed once per loop, packed_gemm.h) and the gate arithmetic of the step
// in one pass over the batch; the backward keeps only the product with R in its loop and forms dR
// a chunk of steps at a time (weight_grad.h). valid (T, B) uint8 marks a prefix of each column:
// padded steps carry the state and output zero. rmask (B, H) multiplies the recurrent input where
// it enters the product (variational recurrent dropout).
//
// - EGRU: rows u, r, z of weight_hh (3H, H) and bias_hh; state (y, c); the recurrent input is the
//   sparse output y. The event e = H(c^ - theta) has the triangular pseudo-derivative
//   dampening * max(0, 1 - support |c^ - theta|) in the backward; theta comes in clamped.
// - GateL0RD: only the latent, h_t = L_t tanh(x_r + R_r h_{t-1}) + (1 - L_t) h_{t-1} with the
//   gate L_t = max(0, tanh(x_g + R_g h_{t-1} - noise_t)) (rows g, r). The output y_t reads h_t
//   and never feeds back, so the caller forms it for all steps at once, one large product. The
//   training noise (sigma eps_t) is drawn by the caller and comes in as a tensor.
// - NC-GRU: rows r, u, c of one matrix [R_r; R_u; W_c] (3H, H), the orthogonal W_c formed by the
//   caller once per sequence; c_t = modReLU(x_c + r_t (W_c h_in)) = sign(a) max(0, |a| + b_c).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include "packed_gemm.h"
#include "safe_math.h"
#include "weight_grad.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace {

inline bool given(const at::Tensor& t) { return t.defined() && t.numel() > 0; }

at::Tensor as_bytes(const at::Tensor& valid) {
  return given(valid) ? valid.to(at::kByte).contiguous() : at::Tensor();
}

// Step t's row of valid, or nullptr where every step is valid.
inline const uint8_t* valid_at(const at::Tensor& valid_u8, int64_t t) {
  return valid_u8.defined() ? valid_u8[t].data_ptr<uint8_t>() : nullptr;
}

// A bias's gradient: the (B, n) rows of one step summed into n columns, in double.
template <typename scalar_t>
void add_columns(int64_t B, int64_t n, const scalar_t* rows, std::vector<double>& acc) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < n; ++k) acc[k] += rows[b * n + k];
}

at::Tensor from_double(const std::vector<double>& acc, at::ScalarType type) {
  return at::tensor(acc, at::TensorOptions().dtype(at::kDouble)).to(type);
}

// NaN by its bits: -ffast-math folds std::isnan(x) and x != x to false.
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

// The gate pass of one batch row. Its pointers never overlap; saying so (__restrict__) lets GCC
// vectorise the loop (with glibc's vector tanh) instead of guarding a dozen possible aliases.
#define R_ __restrict__

// EGRU forward: g the row's recurrent product, a the row's acts (u, r, z, zh, c^, c_{t-1}).
template <typename T>
void egru_row(int64_t H, const T* R_ x, const T* R_ g, const T* R_ bias, const T* R_ theta,
              const T* R_ c_prev, T* R_ a, T* R_ y, T* R_ c, T* R_ out) {
  T *R_ u = a, *R_ r = a + H, *R_ z = a + 2 * H, *R_ zh = a + 3 * H, *R_ ch = a + 4 * H;
  T* R_ cp = a + 5 * H;
  // Three loops: one over all of it is not vectorised by GCC (it gives up on the analysis).
  for (int64_t k = 0; k < H; ++k) {
    u[k] = rnnlab::sigmoid(x[k] + (g[k] + bias[k]));
    r[k] = rnnlab::sigmoid(x[H + k] + (g[H + k] + bias[H + k]));
  }
  for (int64_t k = 0; k < H; ++k) {
    zh[k] = g[2 * H + k] + bias[2 * H + k];
    z[k] = rnnlab::tanh(x[2 * H + k] + r[k] * zh[k]);
  }
  for (int64_t k = 0; k < H; ++k) {
    cp[k] = c_prev[k];
    ch[k] = u[k] * c_prev[k] + (1 - u[k]) * z[k];
    const T e = ch[k] - theta[k] > 0 ? T(1) : T(0);  // H(0) = 0
    // y = e c^, and NaN where c^ is, as the step's 0 * NaN (a NaN must reach the loss).
    const T yk = e > 0 || is_nan(ch[k]) ? ch[k] : T(0);
    y[k] = yk;
    out[k] = yk;
    c[k] = ch[k] - e * theta[k];
  }
}

// EGRU backward: dy, dc the gradients reaching y_t and c_t from later steps; dY the output's.
template <typename T>
void egru_row_backward(int64_t H, const T* R_ a, const T* R_ theta, const T* R_ dy, const T* R_ dY,
                       const T* R_ dc, T damp, T supp, T* R_ dx, T* R_ dp, T* R_ dc_prev,
                       double* R_ dtheta) {
  const T *R_ u = a, *R_ r = a + H, *R_ z = a + 2 * H, *R_ zh = a + 3 * H, *R_ ch = a + 4 * H;
  const T* R_ cprev = a + 5 * H;
  for (int64_t k = 0; k < H; ++k) {
    const T gy = dy[k] + dY[k], gc = dc[k];
    // y = e c^, c = c^ - e theta, e = H(v), v = c^ - theta
    const T v = ch[k] - theta[k];
    const T e = v > 0 ? T(1) : T(0);
    const T p = damp * std::max(T(0), 1 - supp * std::abs(v));
    const T dv = (gy * ch[k] - gc * theta[k]) * p;  // de times de/dv
    const T dch = gy * e + gc + dv;
    dtheta[k] -= gc * e + dv;
    // c^ = u c_{t-1} + (1 - u) z,  z = tanh(x_z + r zh)
    const T du = dch * (cprev[k] - z[k]);
    const T dzp = dch * (1 - u[k]) * (1 - z[k] * z[k]);
    dc_prev[k] = dch * u[k];
    const T dpu = du * u[k] * (1 - u[k]), dpr = dzp * zh[k] * r[k] * (1 - r[k]);
    dx[k] = dpu;
    dp[k] = dpu;
    dx[H + k] = dpr;
    dp[H + k] = dpr;
    dx[2 * H + k] = dzp;
    dp[2 * H + k] = dzp * r[k];
  }
}

// GateL0RD's latent forward; noise may be null.
template <typename T>
void gatel0rd_row(int64_t H, const T* R_ x, const T* R_ g, const T* R_ noise, const T* R_ h_prev,
                  T* R_ rec, T* R_ L, T* R_ h) {
  for (int64_t k = 0; k < H; ++k) {
    T s = x[k] + g[k];
    if (noise != nullptr) s -= noise[k];
    const T tl = rnnlab::tanh(s);
    const T Lk = tl < 0 ? T(0) : tl;  // ReTanh
    const T rk = rnnlab::tanh(x[H + k] + g[H + k]);
    rec[k] = rk;
    L[k] = Lk;
    h[k] = Lk * rk + (1 - Lk) * h_prev[k];
  }
}

// GateL0RD's latent backward: dh, dL the gradients reaching h_t and L_t (dL carried over
// padding, reset here: the gate of step t - 1 is not an input of step t).
template <typename T>
void gatel0rd_row_backward(int64_t H, const T* R_ L, const T* R_ rec, const T* R_ h_prev,
                           const T* R_ dh, const T* R_ dH, T* R_ dL, const T* R_ dLs, T* R_ dx,
                           T* R_ dp, T* R_ direct) {
  for (int64_t k = 0; k < H; ++k) {
    const T gh = dh[k] + dH[k], Lk = L[k], rk = rec[k];
    // h = L rec + (1 - L) h_{t-1}; L = max(0, tanh(s)); rec = tanh(x_r + R_r h_{t-1})
    const T gL = dL[k] + dLs[k] + gh * (rk - h_prev[k]);
    dL[k] = 0;
    direct[k] = gh * (1 - Lk);
    const T ds = Lk > 0 ? gL * (1 - Lk * Lk) : T(0), dr = gh * Lk * (1 - rk * rk);
    dx[k] = ds;
    dp[k] = ds;
    dx[H + k] = dr;
    dp[H + k] = dr;
  }
}

// NC-GRU forward: a the row's acts (r, u, c, W_c h_in, modReLU's input).
template <typename T>
void ncgru_row(int64_t H, const T* R_ x, const T* R_ g, const T* R_ bias, const T* R_ h_prev,
               T* R_ a, T* R_ h, T* R_ out) {
  T *R_ r = a, *R_ u = a + H, *R_ c = a + 2 * H, *R_ wc = a + 3 * H, *R_ pre = a + 4 * H;
  for (int64_t k = 0; k < H; ++k) {
    r[k] = rnnlab::sigmoid(x[k] + g[k]);
    u[k] = rnnlab::sigmoid(x[H + k] + g[H + k]);
    wc[k] = g[2 * H + k];
    const T ak = x[2 * H + k] + r[k] * wc[k];
    pre[k] = ak;
    const T m = std::abs(ak) + bias[k];
    const T sign = T(ak > 0) - T(ak < 0);
    c[k] = m > 0 ? sign * m : T(0);
    const T hk = u[k] * h_prev[k] + (1 - u[k]) * c[k];
    h[k] = hk;
    out[k] = hk;
  }
}

// NC-GRU backward: dh the gradient reaching h_t from later steps, dY the output's.
template <typename T>
void ncgru_row_backward(int64_t H, const T* R_ a, const T* R_ bias, const T* R_ h_prev,
                        const T* R_ dh, const T* R_ dY, T* R_ dx, T* R_ dp, T* R_ direct,
                        double* R_ dbias) {
  const T *R_ r = a, *R_ u = a + H, *R_ c = a + 2 * H, *R_ wc = a + 3 * H, *R_ pre = a + 4 * H;
  for (int64_t k = 0; k < H; ++k) {
    const T g = dh[k] + dY[k];
    // h = u h_{t-1} + (1 - u) c; c = sign(a) max(0, |a| + b_c), a = x_c + r (W_c h_in)
    const T dc = g * (1 - u[k]);
    const T du = g * (h_prev[k] - c[k]);
    direct[k] = g * u[k];
    const T sign = T(pre[k] > 0) - T(pre[k] < 0);
    const T pass = std::abs(pre[k]) + bias[k] > 0 ? dc * sign : T(0);
    dbias[k] += pass;
    const T da = pass * sign;
    const T dpr = da * wc[k] * r[k] * (1 - r[k]), dpu = du * u[k] * (1 - u[k]);
    dx[k] = dpr;
    dp[k] = dpr;
    dx[H + k] = dpu;
    dp[H + k] = dpu;
    dx[2 * H + k] = da;
    dp[2 * H + k] = da * r[k];
  }
}

#undef R_

}  // namespace

// --- EGRU ----------------------------------------------------------------------------------------
// acts (T, B, 6H): u, r, z, the candidate's recurrent term R_z y + b'_z, c^ and c_{t-1}.
std::vector<at::Tensor> egru_forward(at::Tensor x_proj, at::Tensor weight_hh, at::Tensor bias_hh,
                                     at::Tensor theta, at::Tensor y0, at::Tensor c0,
                                     at::Tensor valid, at::Tensor rmask, bool save) {
  x_proj = x_proj.contiguous();
  const int64_t T = x_proj.size(0), B = x_proj.size(1), H = weight_hh.size(1);
  const auto opts = x_proj.options();
  const auto valid_u8 = as_bytes(valid);
  const bool has_mask = given(rmask);
  const auto mask = has_mask ? rmask.contiguous() : at::Tensor();
  const auto b_hh = bias_hh.contiguous(), th = theta.contiguous();
  auto Y = at::empty({T, B, H}, opts);
  auto acts = at::empty({save ? T : 1, B, 6 * H}, opts);
  auto y = y0.contiguous().clone(), c = c0.contiguous().clone();
  auto y_next = at::empty_like(y), c_next = at::empty_like(c);
  auto y_in = has_mask ? at::empty_like(y) : at::Tensor();
  auto rh = at::empty({B, 3 * H}, opts);
  const rnnlab::PackedProduct recurrent(weight_hh, true);  // y_in R^T
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "egru_forward", [&] {
    const scalar_t *bp = b_hh.data_ptr<scalar_t>(), *thp = th.data_ptr<scalar_t>();
    for (int64_t t = 0; t < T; ++t) {
      if (has_mask) at::mul_out(y_in, y, mask);
      recurrent(rh, has_mask ? y_in : y);
      const scalar_t *xt = x_proj[t].data_ptr<scalar_t>(), *rp = rh.data_ptr<scalar_t>();
      const scalar_t *yp = y.data_ptr<scalar_t>(), *cp = c.data_ptr<scalar_t>();
      scalar_t *yn = y_next.data_ptr<scalar_t>(), *cn = c_next.data_ptr<scalar_t>();
      scalar_t *out = Y[t].data_ptr<scalar_t>(), *ac = acts[save ? t : 0].data_ptr<scalar_t>();
      const uint8_t* vt = valid_at(valid_u8, t);
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t o = b * H;
          if (vt != nullptr && !vt[b]) {  // acts zeroed: an output, it must be deterministic
            std::copy(yp + o, yp + o + H, yn + o);
            std::copy(cp + o, cp + o + H, cn + o);
            std::fill(out + o, out + o + H, scalar_t(0));
            std::fill(ac + b * 6 * H, ac + (b + 1) * 6 * H, scalar_t(0));
            continue;
          }
          egru_row<scalar_t>(H, xt + b * 3 * H, rp + b * 3 * H, bp, thp, cp + o, ac + b * 6 * H,
                             yn + o, cn + o, out + o);
        }
      });
      std::swap(y, y_next);
      std::swap(c, c_next);
    }
  });
  if (!save) acts = at::empty({0}, opts);
  return {Y, y, c, acts};
}

std::vector<at::Tensor> egru_backward(at::Tensor dY, at::Tensor dyT, at::Tensor dcT,
                                      at::Tensor acts, at::Tensor Y, at::Tensor y0,
                                      at::Tensor weight_hh, at::Tensor theta, at::Tensor valid,
                                      at::Tensor rmask, double dampening, double support) {
  dY = dY.contiguous();
  acts = acts.contiguous();
  const int64_t T = dY.size(0), B = dY.size(1), H = dY.size(2);
  const auto opts = dY.options();
  const auto valid_u8 = as_bytes(valid);
  const bool has_mask = given(rmask);
  const auto mask = has_mask ? rmask.contiguous() : at::Tensor();
  const auto th = theta.contiguous();
  auto dX = at::empty({T, B, 3 * H}, opts);  // every row written below
  auto dy = dyT.contiguous().clone(), dc = dcT.contiguous().clone();
  auto dy_next = at::empty_like(dy), dc_next = at::empty_like(dc);
  auto dtheta_rows = at::zeros({B, H}, opts.dtype(at::kDouble));  // one row per batch row
  const rnnlab::PackedProduct back(weight_hh, false);  // d(products) R
  // dR = sum_t dProd_t^T (y_{t-1} * rmask): Y read shifted, y0 first.
  rnnlab::ChunkedWeightGrad dR_chunks(T, B, 3 * H, {{0, 3 * H, Y, y0.contiguous(), mask}}, opts);
  std::vector<double> dbias(3 * H, 0.0);
  AT_DISPATCH_FLOATING_TYPES(dY.scalar_type(), "egru_backward", [&] {
    const scalar_t* thp = th.data_ptr<scalar_t>();
    const scalar_t damp = static_cast<scalar_t>(dampening), supp = static_cast<scalar_t>(support);
    double* dth = dtheta_rows.data_ptr<double>();
    for (int64_t t = T - 1; t >= 0; --t) {
      const uint8_t* vt = valid_at(valid_u8, t);
      const scalar_t *ac = acts[t].data_ptr<scalar_t>(), *dYt = dY[t].data_ptr<scalar_t>();
      const scalar_t *dyp = dy.data_ptr<scalar_t>(), *dcp = dc.data_ptr<scalar_t>();
      scalar_t *dcn = dc_next.data_ptr<scalar_t>(), *dx = dX[t].data_ptr<scalar_t>();
      const auto dProd_t = dR_chunks.slot(t);
      scalar_t* dpr = dProd_t.data_ptr<scalar_t>();
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t o = b * H;
          if (vt != nullptr && !vt[b]) {  // padding: the gradient passes to the carried state
            std::fill(dx + b * 3 * H, dx + (b + 1) * 3 * H, scalar_t(0));
            std::fill(dpr + b * 3 * H, dpr + (b + 1) * 3 * H, scalar_t(0));
            std::copy(dcp + o, dcp + o + H, dcn + o);
            continue;
          }
          egru_row_backward<scalar_t>(H, ac + b * 6 * H, thp, dyp + o, dYt + o, dcp + o, damp,
                                      supp, dx + b * 3 * H, dpr + b * 3 * H, dcn + o, dth + o);
        }
      });
      add_columns(B, 3 * H, dpr, dbias);
      back(dy_next, dProd_t);
      dR_chunks.done(t);
      if (has_mask) dy_next.mul_(mask);
      if (vt != nullptr) {
        scalar_t* dyn = dy_next.data_ptr<scalar_t>();
        for (int64_t b = 0; b < B; ++b)
          if (!vt[b]) std::copy(dyp + b * H, dyp + (b + 1) * H, dyn + b * H);
      }
      std::swap(dy, dy_next);
      std::swap(dc, dc_next);
    }
  });
  const auto dtheta = dtheta_rows.sum(0).to(dY.scalar_type());
  return {dX, dR_chunks.result(), from_double(dbias, dY.scalar_type()), dy, dc, dtheta};
}

// --- GateL0RD's latent -----------------------------------------------------------------------------
// Hs, Ls (T, B, H): the latent and the gate after each step, both carried over padding; acts
// (T, B, H): the recommendation tanh(x_r + R_r h_{t-1}).
std::vector<at::Tensor> gatel0rd_forward(at::Tensor x_proj, at::Tensor weight_hh, at::Tensor h0,
                                         at::Tensor L0, at::Tensor noise, at::Tensor valid,
                                         bool save) {
  x_proj = x_proj.contiguous();
  const int64_t T = x_proj.size(0), B = x_proj.size(1), H = weight_hh.size(1);
  const auto opts = x_proj.options();
  const auto valid_u8 = as_bytes(valid);
  const bool noisy = given(noise);
  const auto eps = noisy ? noise.contiguous() : at::Tensor();
  const auto h_first = h0.contiguous(), L_first = L0.contiguous();
  auto Hs = at::empty({T, B, H}, opts), Ls = at::empty({T, B, H}, opts);
  auto acts = at::empty({save ? T : 1, B, H}, opts);
  auto gh = at::empty({B, 2 * H}, opts);
  const rnnlab::PackedProduct recurrent(weight_hh, true);  // h_{t-1} R^T
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "gatel0rd_forward", [&] {
    for (int64_t t = 0; t < T; ++t) {
      const auto h_prev = t == 0 ? h_first : Hs[t - 1];
      recurrent(gh, h_prev);
      const scalar_t *xt = x_proj[t].data_ptr<scalar_t>(), *rp = gh.data_ptr<scalar_t>();
      const scalar_t* hp = h_prev.data_ptr<scalar_t>();
      const scalar_t* Lp = (t == 0 ? L_first : Ls[t - 1]).data_ptr<scalar_t>();
      const scalar_t* nt = noisy ? eps[t].data_ptr<scalar_t>() : nullptr;
      scalar_t *hn = Hs[t].data_ptr<scalar_t>(), *Ln = Ls[t].data_ptr<scalar_t>();
      scalar_t* rec = acts[save ? t : 0].data_ptr<scalar_t>();
      const uint8_t* vt = valid_at(valid_u8, t);
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t o = b * H;
          if (vt != nullptr && !vt[b]) {
            std::copy(hp + o, hp + o + H, hn + o);
            std::copy(Lp + o, Lp + o + H, Ln + o);
            std::fill(rec + o, rec + o + H, scalar_t(0));
            continue;
          }
          gatel0rd_row<scalar_t>(H, xt + b * 2 * H, rp + b * 2 * H, nt != nullptr ? nt + o : nullptr,
                                 hp + o, rec + o, Ln + o, hn + o);
        }
      });
    }
  });
  if (!save) acts = at::empty({0}, opts);
  return {Hs, Ls, acts};
}

std::vector<at::Tensor> gatel0rd_backward(at::Tensor dHs, at::Tensor dLs, at::Tensor acts,
                                          at::Tensor Hs, at::Tensor Ls, at::Tensor h0,
                                          at::Tensor weight_hh, at::Tensor valid) {
  dHs = dHs.contiguous();
  dLs = dLs.contiguous();
  Hs = Hs.contiguous();
  Ls = Ls.contiguous();
  acts = acts.contiguous();
  const auto h_first = h0.contiguous();
  const int64_t T = dHs.size(0), B = dHs.size(1), H = dHs.size(2);
  const auto opts = dHs.options();
  const auto valid_u8 = as_bytes(valid);
  auto dX = at::empty({T, B, 2 * H}, opts);  // every row written below
  auto dh = at::zeros({B, H}, opts), dh_next = at::empty_like(dh), direct = at::empty_like(dh);
  auto dL = at::zeros({B, H}, opts);  // the gradient of a gate carried over padding
  const rnnlab::PackedProduct back(weight_hh, false);
  rnnlab::ChunkedWeightGrad dR_chunks(T, B, 2 * H, {{0, 2 * H, Hs, h_first}}, opts);
  AT_DISPATCH_FLOATING_TYPES(dHs.scalar_type(), "gatel0rd_backward", [&] {
    for (int64_t t = T - 1; t >= 0; --t) {
      const uint8_t* vt = valid_at(valid_u8, t);
      const scalar_t* hp = (t == 0 ? h_first : Hs[t - 1]).data_ptr<scalar_t>();
      const scalar_t *Lt = Ls[t].data_ptr<scalar_t>(), *rec = acts[t].data_ptr<scalar_t>();
      const scalar_t *dHt = dHs[t].data_ptr<scalar_t>(), *dLt = dLs[t].data_ptr<scalar_t>();
      const scalar_t* dhp = dh.data_ptr<scalar_t>();
      scalar_t *dLc = dL.data_ptr<scalar_t>(), *dir = direct.data_ptr<scalar_t>();
      scalar_t* dx = dX[t].data_ptr<scalar_t>();
      const auto dProd_t = dR_chunks.slot(t);
      scalar_t* dpr = dProd_t.data_ptr<scalar_t>();
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t o = b * H;
          if (vt != nullptr && !vt[b]) {  // padding: h and L carried, their gradients too
            std::fill(dx + b * 2 * H, dx + (b + 1) * 2 * H, scalar_t(0));
            std::fill(dpr + b * 2 * H, dpr + (b + 1) * 2 * H, scalar_t(0));
            for (int64_t k = o; k < o + H; ++k) {
              dir[k] = dhp[k] + dHt[k];
              dLc[k] += dLt[k];
            }
            continue;
          }
          gatel0rd_row_backward<scalar_t>(H, Lt + o, rec + o, hp + o, dhp + o, dHt + o, dLc + o,
                                          dLt + o, dx + b * 2 * H, dpr + b * 2 * H, dir + o);
        }
      });
      back(dh_next, dProd_t);  // zero rows (padding) give zero
      dR_chunks.done(t);
      dh_next.add_(direct);
      std::swap(dh, dh_next);
    }
  });
  return {dX, dR_chunks.result(), dh, dL};
}

// --- NC-GRU --------------------------------------------------------------------------------------
// acts (T, B, 5H): r, u, the candidate c, its recurrent term W_c h_in and a, modReLU's input.
std::vector<at::Tensor> ncgru_forward(at::Tensor x_proj, at::Tensor weight, at::Tensor modrelu_bias,
                                      at::Tensor h0, at::Tensor valid, at::Tensor rmask,
                                      bool save) {
  x_proj = x_proj.contiguous();
  const int64_t T = x_proj.size(0), B = x_proj.size(1), H = weight.size(1);
  const auto opts = x_proj.options();
  const auto valid_u8 = as_bytes(valid);
  const bool has_mask = given(rmask);
  const auto mask = has_mask ? rmask.contiguous() : at::Tensor();
  const auto bc = modrelu_bias.contiguous();
  auto Y = at::empty({T, B, H}, opts);
  auto acts = at::empty({save ? T : 1, B, 5 * H}, opts);
  auto h = h0.contiguous().clone(), h_next = at::empty_like(h);
  auto h_in = has_mask ? at::empty_like(h) : at::Tensor();
  auto rh = at::empty({B, 3 * H}, opts);
  const rnnlab::PackedProduct recurrent(weight, true);  // h_in [R_r; R_u; W_c]^T
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "ncgru_forward", [&] {
    const scalar_t* bp = bc.data_ptr<scalar_t>();
    for (int64_t t = 0; t < T; ++t) {
      if (has_mask) at::mul_out(h_in, h, mask);
      recurrent(rh, has_mask ? h_in : h);
      const scalar_t *xt = x_proj[t].data_ptr<scalar_t>(), *rp = rh.data_ptr<scalar_t>();
      const scalar_t* hp = h.data_ptr<scalar_t>();
      scalar_t *hn = h_next.data_ptr<scalar_t>(), *out = Y[t].data_ptr<scalar_t>();
      scalar_t* ac = acts[save ? t : 0].data_ptr<scalar_t>();
      const uint8_t* vt = valid_at(valid_u8, t);
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t o = b * H;
          if (vt != nullptr && !vt[b]) {
            std::copy(hp + o, hp + o + H, hn + o);
            std::fill(out + o, out + o + H, scalar_t(0));
            std::fill(ac + b * 5 * H, ac + (b + 1) * 5 * H, scalar_t(0));
            continue;
          }
          ncgru_row<scalar_t>(H, xt + b * 3 * H, rp + b * 3 * H, bp, hp + o, ac + b * 5 * H,
                              hn + o, out + o);
        }
      });
      std::swap(h, h_next);
    }
  });
  if (!save) acts = at::empty({0}, opts);
  return {Y, h, acts};
}

std::vector<at::Tensor> ncgru_backward(at::Tensor dY, at::Tensor dhT, at::Tensor acts, at::Tensor Y,
                                       at::Tensor h0, at::Tensor weight, at::Tensor modrelu_bias,
                                       at::Tensor valid, at::Tensor rmask) {
  dY = dY.contiguous();
  acts = acts.contiguous();
  const auto h_first = h0.contiguous();
  const int64_t T = dY.size(0), B = dY.size(1), H = dY.size(2);
  const auto opts = dY.options();
  const auto valid_u8 = as_bytes(valid);
  const bool has_mask = given(rmask);
  const auto mask = has_mask ? rmask.contiguous() : at::Tensor();
  const auto bc = modrelu_bias.contiguous();
  auto dX = at::empty({T, B, 3 * H}, opts);  // every row written below
  auto dh = dhT.contiguous().clone(), dh_next = at::empty_like(dh), direct = at::empty_like(dh);
  auto dbias_rows = at::zeros({B, H}, opts.dtype(at::kDouble));
  const rnnlab::PackedProduct back(weight, false);
  rnnlab::ChunkedWeightGrad dW_chunks(T, B, 3 * H, {{0, 3 * H, Y, h_first, mask}}, opts);
  AT_DISPATCH_FLOATING_TYPES(dY.scalar_type(), "ncgru_backward", [&] {
    const scalar_t* bp = bc.data_ptr<scalar_t>();
    double* dbr = dbias_rows.data_ptr<double>();
    for (int64_t t = T - 1; t >= 0; --t) {
      const uint8_t* vt = valid_at(valid_u8, t);
      const scalar_t* hp = (t == 0 ? h_first : Y[t - 1]).data_ptr<scalar_t>();  // unmasked
      const scalar_t *ac = acts[t].data_ptr<scalar_t>(), *dYt = dY[t].data_ptr<scalar_t>();
      const scalar_t* dhp = dh.data_ptr<scalar_t>();
      scalar_t *dir = direct.data_ptr<scalar_t>(), *dx = dX[t].data_ptr<scalar_t>();
      const auto dProd_t = dW_chunks.slot(t);
      scalar_t* dpr = dProd_t.data_ptr<scalar_t>();
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t o = b * H;
          if (vt != nullptr && !vt[b]) {
            std::fill(dx + b * 3 * H, dx + (b + 1) * 3 * H, scalar_t(0));
            std::fill(dpr + b * 3 * H, dpr + (b + 1) * 3 * H, scalar_t(0));
            std::copy(dhp + o, dhp + o + H, dir + o);
            continue;
          }
          ncgru_row_backward<scalar_t>(H, ac + b * 5 * H, bp, hp + o, dhp + o, dYt + o,
                                       dx + b * 3 * H, dpr + b * 3 * H, dir + o, dbr + o);
        }
      });
      back(dh_next, dProd_t);
      dW_chunks.done(t);
      if (has_mask) dh_next.mul_(mask);
      dh_next.add_(direct);
      std::swap(dh, dh_next);
    }
  });
  const auto dbias = dbias_rows.sum(0).to(dY.scalar_type());
  return {dX, dW_chunks.result(), dbias, dh};
}
