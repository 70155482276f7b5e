// Fused CPU kernels of the state-regularised cells (Wang & Niepert 2019): SR-GRU and
// SR-LSTM(-P). The equations are in the cells' docstrings (cells/srgru.py, srlstm.py); the step
// loop there is the reference these kernels are tested against.
//
// The scheme of gru_like.cpp: x_proj for all steps comes from the caller; per step the recurrent
// product(s) (packed_gemm.h) and one pass over the batch rows that does the gate arithmetic and
// the pull to the centroids: logits S u / tau (k dot products of length H), their softmax alpha,
// and h = S^T alpha. The backward keeps the products with R in its loop and forms dR a chunk of
// steps at a time (weight_grad.h); dS = sum_t E_t^T U_t + A_t^T G_t (E the logits' gradient over
// tau, G the gradient reaching h_t, A = alpha) is two products after the loop. valid (T, B) uint8
// marks a prefix of each column: padded steps carry the state and output zero. rmask (B, H)
// multiplies h_{t-1} where it enters a product (variational recurrent dropout).
//
// - SR-GRU: rows z, r, c of weight_hh (3H, H); two products a step, [W_z; W_r] h_in and then
//   W_c (r h_in). The hard sigmoid's gradient is 0.2 where 0 <= 0.2 v + 0.5 <= 1 (torch's clamp
//   passes the gradient at the bounds).
// - SR-LSTM: rows i, f, z, o; x_proj holds the bias; peepholes (3, H) rows i, f, o (zeros for the
//   plain SR-LSTM). The cell state c passes on unregularised.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include "packed_gemm.h"
#include "safe_math.h"
#include "weight_grad.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

inline bool given(const at::Tensor& t) { return t.defined() && t.numel() > 0; }

at::Tensor as_bytes(const at::Tensor& valid) {
  return given(valid) ? valid.to(at::kByte).contiguous() : at::Tensor();
}

inline const uint8_t* valid_at(const at::Tensor& valid_u8, int64_t t) {
  return valid_u8.defined() ? valid_u8[t].data_ptr<uint8_t>() : nullptr;
}

#define R_ __restrict__

// The pull of one row to the centroids S (K, H): alpha = softmax(S u / tau), h = S^T alpha.
template <typename T>
void pull_row(int64_t H, int64_t K, const T* R_ S, T tau, const T* R_ u, T* R_ alpha, T* R_ h) {
  T top = T(0);
  for (int64_t j = 0; j < K; ++j) {
    const T* R_ s = S + j * H;
    T dot = 0;
    for (int64_t k = 0; k < H; ++k) dot += s[k] * u[k];
    alpha[j] = dot / tau;
    top = j == 0 ? alpha[j] : std::max(top, alpha[j]);
  }
  T sum = 0;
  for (int64_t j = 0; j < K; ++j) {
    alpha[j] = std::exp(alpha[j] - top);
    sum += alpha[j];
  }
  for (int64_t j = 0; j < K; ++j) alpha[j] /= sum;
  std::fill(h, h + H, T(0));
  for (int64_t j = 0; j < K; ++j) {
    const T* R_ s = S + j * H;
    const T a = alpha[j];
    for (int64_t k = 0; k < H; ++k) h[k] += a * s[k];
  }
}

// Its backward: g the gradient reaching h; e (K) the logits' gradient over tau, so that
// du = S^T e and dS gains e u^T + alpha g^T (after the loop).
template <typename T>
void pull_row_backward(int64_t H, int64_t K, const T* R_ S, T tau, const T* R_ alpha,
                       const T* R_ g, T* R_ e, T* R_ du) {
  T mean = 0;  // sum_j alpha_j d alpha_j
  for (int64_t j = 0; j < K; ++j) {
    const T* R_ s = S + j * H;
    T dot = 0;
    for (int64_t k = 0; k < H; ++k) dot += s[k] * g[k];
    e[j] = dot;
    mean += alpha[j] * dot;
  }
  for (int64_t j = 0; j < K; ++j) e[j] = alpha[j] * (e[j] - mean) / tau;
  std::fill(du, du + H, T(0));
  for (int64_t j = 0; j < K; ++j) {
    const T* R_ s = S + j * H;
    const T ej = e[j];
    for (int64_t k = 0; k < H; ++k) du[k] += ej * s[k];
  }
}

template <typename T>
inline T clip01(T v) {
  return std::min(T(1), std::max(T(0), v));
}

// d hs(a) / d a from v = 0.2 a + 0.5.
template <typename T>
inline T hard_slope(T v) {
  return v >= T(0) && v <= T(1) ? T(0.2) : T(0);
}

// SR-GRU, first pass: a the row's acts (v_z, v_r, c, u), with v = 0.2 (x + W h_in) + 0.5;
// rh = r * h_in, the input of the candidate's product.
template <typename T>
void srgru_gates(int64_t H, const T* R_ x, const T* R_ g, const T* R_ h_in, T* R_ a, T* R_ rh) {
  T *R_ vz = a, *R_ vr = a + H;
  for (int64_t k = 0; k < H; ++k) {
    vz[k] = T(0.2) * (x[k] + g[k]) + T(0.5);
    vr[k] = T(0.2) * (x[H + k] + g[H + k]) + T(0.5);
    rh[k] = clip01(vr[k]) * h_in[k];
  }
}

// SR-GRU, second pass: gc = W_c (r h_in); u, then the pull.
template <typename T>
void srgru_candidate(int64_t H, int64_t K, const T* R_ xc, const T* R_ gc, const T* R_ h_prev,
                     const T* R_ S, T tau, T* R_ a, T* R_ alpha, T* R_ h) {
  const T* R_ vz = a;
  T *R_ c = a + 2 * H, *R_ u = a + 3 * H;
  for (int64_t k = 0; k < H; ++k) {
    c[k] = rnnlab::tanh(xc[k] + gc[k]);
    const T z = clip01(vz[k]);
    u[k] = (1 - z) * c[k] + z * h_prev[k];
  }
  pull_row(H, K, S, tau, u, alpha, h);
}

// SR-GRU backward, first pass (du from the pull): the gradients of z's and c's pre-activations
// (dx, dp: rows z and c; r's comes in the second pass) and direct, the part of dh_{t-1} through
// u's z h_{t-1}.
template <typename T>
void srgru_backward_zc(int64_t H, const T* R_ a, const T* R_ h_prev, const T* R_ du, T* R_ dx,
                       T* R_ dp, T* R_ direct) {
  const T *R_ vz = a, *R_ c = a + 2 * H;
  for (int64_t k = 0; k < H; ++k) {
    const T z = clip01(vz[k]);
    // u = (1 - z) c + z h_{t-1}; c = tanh(x_c + W_c (r h_in)); z = hs(x_z + W_z h_in)
    const T dac = du[k] * (1 - z) * (1 - c[k] * c[k]);
    const T daz = du[k] * (h_prev[k] - c[k]) * hard_slope(vz[k]);
    direct[k] = du[k] * z;
    dx[k] = daz;
    dp[k] = daz;
    dx[2 * H + k] = dac;
    dp[2 * H + k] = dac;
  }
}

// SR-GRU backward, second pass: drh = d(r h_in), the candidate's product's input gradient.
template <typename T>
void srgru_backward_r(int64_t H, const T* R_ a, const T* R_ h_prev, const T* R_ mask,
                      const T* R_ drh, T* R_ dx, T* R_ dp, T* R_ direct) {
  const T* R_ vr = a + H;
  for (int64_t k = 0; k < H; ++k) {
    const T m = mask != nullptr ? mask[k] : T(1);
    const T dar = drh[k] * h_prev[k] * m * hard_slope(vr[k]);
    direct[k] += drh[k] * clip01(vr[k]) * m;
    dx[H + k] = dar;
    dp[H + k] = dar;
  }
}

// SR-LSTM forward: g the row's recurrent product, P the peepholes (3, H), a the row's acts
// (i, f, z, o, tanh c), c the new cell state, u scratch.
template <typename T>
void srlstm_gates(int64_t H, const T* R_ x, const T* R_ g, const T* R_ P, const T* R_ c_prev,
                  T* R_ a, T* R_ c, T* R_ u) {
  T *R_ i = a, *R_ f = a + H, *R_ z = a + 2 * H, *R_ o = a + 3 * H, *R_ tc = a + 4 * H;
  const T *R_ p_i = P, *R_ p_f = P + H, *R_ p_o = P + 2 * H;
  for (int64_t k = 0; k < H; ++k) {
    i[k] = rnnlab::sigmoid(x[k] + g[k] + p_i[k] * c_prev[k]);
    f[k] = rnnlab::sigmoid(x[H + k] + g[H + k] + p_f[k] * c_prev[k]);
    z[k] = rnnlab::tanh(x[2 * H + k] + g[2 * H + k]);
  }
  for (int64_t k = 0; k < H; ++k) {
    c[k] = f[k] * c_prev[k] + i[k] * z[k];
    o[k] = rnnlab::sigmoid(x[3 * H + k] + g[3 * H + k] + p_o[k] * c[k]);
    tc[k] = rnnlab::tanh(c[k]);
    u[k] = o[k] * tc[k];
  }
}

// SR-LSTM backward: du from the pull, dc the gradient reaching c_t from later steps.
template <typename T>
void srlstm_backward_row(int64_t H, const T* R_ a, const T* R_ P, const T* R_ c_prev,
                         const T* R_ c, const T* R_ du, const T* R_ dc, T* R_ dx, T* R_ dp,
                         T* R_ dc_prev, double* R_ dpeep) {
  const T *R_ i = a, *R_ f = a + H, *R_ z = a + 2 * H, *R_ o = a + 3 * H, *R_ tc = a + 4 * H;
  const T *R_ p_i = P, *R_ p_f = P + H, *R_ p_o = P + 2 * H;
  for (int64_t k = 0; k < H; ++k) {
    // u = o tanh(c); o = sigma(x_o + R_o h + p_o c)
    const T dao = du[k] * tc[k] * o[k] * (1 - o[k]);
    const T gc = dc[k] + du[k] * o[k] * (1 - tc[k] * tc[k]) + dao * p_o[k];
    // c = f c_{t-1} + i z
    const T dai = gc * z[k] * i[k] * (1 - i[k]);
    const T daf = gc * c_prev[k] * f[k] * (1 - f[k]);
    const T daz = gc * i[k] * (1 - z[k] * z[k]);
    dc_prev[k] = gc * f[k] + dai * p_i[k] + daf * p_f[k];
    dpeep[k] += dai * c_prev[k];
    dpeep[H + k] += daf * c_prev[k];
    dpeep[2 * H + k] += dao * c[k];
    dx[k] = dai;
    dp[k] = dai;
    dx[H + k] = daf;
    dp[H + k] = daf;
    dx[2 * H + k] = daz;
    dp[2 * H + k] = daz;
    dx[3 * H + k] = dao;
    dp[3 * H + k] = dao;
  }
}

#undef R_

// dS = E^T U + A^T G over all steps and rows: E, A (T, B, K); U, G (T, B, H).
at::Tensor centroid_grad(const at::Tensor& E, const at::Tensor& U, const at::Tensor& A,
                         const at::Tensor& G) {
  const int64_t K = E.size(2), H = G.size(2);
  const auto e = E.reshape({-1, K}), a = A.reshape({-1, K});
  return at::addmm(at::mm(e.t(), U.reshape({-1, H})), a.t(), G.reshape({-1, H}));
}

// --- SR-GRU --------------------------------------------------------------------------------------
// acts (T, B, 4H): v_z, v_r (the hard sigmoids' arguments), c, u; alphas (T, B, K); RH (T, B, H)
// r * h_in, the candidate product's input (for dW_c).
std::vector<at::Tensor> srgru_forward(at::Tensor x_proj, at::Tensor weight_hh,
                                      at::Tensor centroids, at::Tensor h0, at::Tensor valid,
                                      at::Tensor rmask, double tau, bool save) {
  x_proj = x_proj.contiguous();
  const int64_t T = x_proj.size(0), B = x_proj.size(1), H = weight_hh.size(1);
  const int64_t K = centroids.size(0);
  const auto opts = x_proj.options();
  const auto valid_u8 = as_bytes(valid);
  const bool has_mask = given(rmask);
  const auto mask = has_mask ? rmask.contiguous() : at::Tensor();
  const auto S = centroids.contiguous();
  auto Y = at::empty({T, B, H}, opts);
  auto acts = at::empty({save ? T : 1, B, 4 * H}, opts);
  auto alphas = at::empty({save ? T : 1, B, K}, opts);
  auto RH = at::empty({save ? T : 1, B, H}, opts);
  auto h = h0.contiguous().clone(), h_next = at::empty_like(h);
  auto h_in = has_mask ? at::empty_like(h) : h;
  auto g_zr = at::empty({B, 2 * H}, opts), g_c = at::empty({B, H}, opts);
  const rnnlab::PackedProduct gates(weight_hh.narrow(0, 0, 2 * H), true);  // h_in [W_z; W_r]^T
  const rnnlab::PackedProduct candidate(weight_hh.narrow(0, 2 * H, H), true);  // (r h_in) W_c^T
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "srgru_forward", [&] {
    const scalar_t* sp = S.data_ptr<scalar_t>();
    const scalar_t tau_t = static_cast<scalar_t>(tau);
    for (int64_t t = 0; t < T; ++t) {
      if (has_mask) at::mul_out(h_in, h, mask);
      gates(g_zr, h_in);
      const int64_t s = save ? t : 0;
      auto rh = RH[s];
      const scalar_t *xt = x_proj[t].data_ptr<scalar_t>(), *hp = h.data_ptr<scalar_t>();
      const scalar_t *hip = h_in.data_ptr<scalar_t>(), *gp = g_zr.data_ptr<scalar_t>();
      scalar_t *ac = acts[s].data_ptr<scalar_t>(), *al = alphas[s].data_ptr<scalar_t>();
      scalar_t *rhp = rh.data_ptr<scalar_t>(), *hn = h_next.data_ptr<scalar_t>();
      scalar_t* out = Y[t].data_ptr<scalar_t>();
      const uint8_t* vt = valid_at(valid_u8, t);
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t o = b * H;
          if (vt != nullptr && !vt[b]) {  // zeros: saved, they must be deterministic
            std::fill(rhp + o, rhp + o + H, scalar_t(0));
            continue;
          }
          srgru_gates<scalar_t>(H, xt + b * 3 * H, gp + b * 2 * H, hip + o, ac + b * 4 * H,
                                rhp + o);
        }
      });
      candidate(g_c, rh);
      const scalar_t* gc = g_c.data_ptr<scalar_t>();
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t o = b * H;
          if (vt != nullptr && !vt[b]) {
            std::copy(hp + o, hp + o + H, hn + o);
            std::fill(out + o, out + o + H, scalar_t(0));
            std::fill(ac + b * 4 * H, ac + (b + 1) * 4 * H, scalar_t(0));
            std::fill(al + b * K, al + (b + 1) * K, scalar_t(0));
            continue;
          }
          srgru_candidate<scalar_t>(H, K, xt + b * 3 * H + 2 * H, gc + o, hp + o, sp, tau_t,
                                    ac + b * 4 * H, al + b * K, hn + o);
          std::copy(hn + o, hn + o + H, out + o);
        }
      });
      std::swap(h, h_next);
      if (!has_mask) h_in = h;
    }
  });
  if (!save) {
    acts = at::empty({0}, opts);
    alphas = at::empty({0}, opts);
    RH = at::empty({0}, opts);
  }
  return {Y, h, acts, alphas, RH};
}

std::vector<at::Tensor> srgru_backward(at::Tensor dY, at::Tensor dhT, at::Tensor acts,
                                       at::Tensor alphas, at::Tensor RH, at::Tensor Y,
                                       at::Tensor h0, at::Tensor weight_hh, at::Tensor centroids,
                                       at::Tensor valid, at::Tensor rmask, double tau) {
  dY = dY.contiguous();
  acts = acts.contiguous();
  alphas = alphas.contiguous();
  RH = RH.contiguous();
  Y = Y.contiguous();
  const auto h_first = h0.contiguous();
  const int64_t T = dY.size(0), B = dY.size(1), H = dY.size(2), K = centroids.size(0);
  const auto opts = dY.options();
  const auto valid_u8 = as_bytes(valid);
  const bool has_mask = given(rmask);
  const auto mask = has_mask ? rmask.contiguous() : at::Tensor();
  const auto S = centroids.contiguous();
  auto dX = at::empty({T, B, 3 * H}, opts);  // every row written below
  auto G = at::empty({T, B, H}, opts), E = at::empty({T, B, K}, opts);
  auto dh = dhT.contiguous().clone(), dh_next = at::empty_like(dh);
  auto direct = at::empty_like(dh), du = at::empty_like(dh), drh = at::empty_like(dh);
  const rnnlab::PackedProduct back_zr(weight_hh.narrow(0, 0, 2 * H), false);
  const rnnlab::PackedProduct back_c(weight_hh.narrow(0, 2 * H, H), false);
  // dW_{z,r} = sum_t dProd^T h_in (Y read shifted, h0 first); dW_c = sum_t dProd_c^T (r h_in).
  rnnlab::ChunkedWeightGrad dW_chunks(T, B, 3 * H,
                                      {{0, 2 * H, Y, h_first, mask}, {2 * H, H, RH}}, opts);
  AT_DISPATCH_FLOATING_TYPES(dY.scalar_type(), "srgru_backward", [&] {
    const scalar_t* sp = S.data_ptr<scalar_t>();
    const scalar_t tau_t = static_cast<scalar_t>(tau);
    const scalar_t* mp = has_mask ? mask.data_ptr<scalar_t>() : nullptr;
    for (int64_t t = T - 1; t >= 0; --t) {
      const uint8_t* vt = valid_at(valid_u8, t);
      const scalar_t* hp = (t == 0 ? h_first : Y[t - 1]).data_ptr<scalar_t>();
      const scalar_t *ac = acts[t].data_ptr<scalar_t>(), *al = alphas[t].data_ptr<scalar_t>();
      const scalar_t *dYt = dY[t].data_ptr<scalar_t>(), *dhp = dh.data_ptr<scalar_t>();
      scalar_t *gt = G[t].data_ptr<scalar_t>(), *et = E[t].data_ptr<scalar_t>();
      scalar_t *dup = du.data_ptr<scalar_t>(), *dir = direct.data_ptr<scalar_t>();
      scalar_t* dx = dX[t].data_ptr<scalar_t>();
      const auto dProd_t = dW_chunks.slot(t);
      scalar_t* dpr = dProd_t.data_ptr<scalar_t>();
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t o = b * H;
          if (vt != nullptr && !vt[b]) {  // padding: the gradient passes to the carried state
            std::fill(dx + b * 3 * H, dx + (b + 1) * 3 * H, scalar_t(0));
            std::fill(dpr + b * 3 * H, dpr + (b + 1) * 3 * H, scalar_t(0));
            std::fill(gt + o, gt + o + H, scalar_t(0));
            std::fill(et + b * K, et + (b + 1) * K, scalar_t(0));
            std::copy(dhp + o, dhp + o + H, dir + o);
            continue;
          }
          for (int64_t k = o; k < o + H; ++k) gt[k] = dhp[k] + dYt[k];
          pull_row_backward<scalar_t>(H, K, sp, tau_t, al + b * K, gt + o, et + b * K, dup + o);
          srgru_backward_zc<scalar_t>(H, ac + b * 4 * H, hp + o, dup + o, dx + b * 3 * H,
                                      dpr + b * 3 * H, dir + o);
        }
      });
      back_c(drh, dProd_t.narrow(1, 2 * H, H));  // d(r h_in) = dProd_c W_c
      const scalar_t* drp = drh.data_ptr<scalar_t>();
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t o = b * H;
          if (vt != nullptr && !vt[b]) continue;
          srgru_backward_r<scalar_t>(H, ac + b * 4 * H, hp + o, mp != nullptr ? mp + o : nullptr,
                                     drp + o, dx + b * 3 * H, dpr + b * 3 * H, dir + o);
        }
      });
      back_zr(dh_next, dProd_t.narrow(1, 0, 2 * H));  // zero rows (padding) give zero
      dW_chunks.done(t);
      if (has_mask) dh_next.mul_(mask);
      dh_next.add_(direct);
      std::swap(dh, dh_next);
    }
  });
  const auto U = acts.narrow(2, 3 * H, H);
  return {dX, dW_chunks.result(), centroid_grad(E, U, alphas, G), dh};
}

// --- SR-LSTM -------------------------------------------------------------------------------------
// acts (T, B, 5H): i, f, z, o after their nonlinearities and tanh(c); C (T, B, H) the cell states
// (carried over padding); alphas (T, B, K).
std::vector<at::Tensor> srlstm_forward(at::Tensor x_proj, at::Tensor weight_hh,
                                       at::Tensor peephole, at::Tensor centroids, at::Tensor h0,
                                       at::Tensor c0, at::Tensor valid, at::Tensor rmask,
                                       double tau, bool save) {
  x_proj = x_proj.contiguous();
  const int64_t T = x_proj.size(0), B = x_proj.size(1), H = weight_hh.size(1);
  const int64_t K = centroids.size(0);
  const auto opts = x_proj.options();
  const auto valid_u8 = as_bytes(valid);
  const bool has_mask = given(rmask);
  const auto mask = has_mask ? rmask.contiguous() : at::Tensor();
  const auto S = centroids.contiguous();
  const auto P = given(peephole) ? peephole.contiguous() : at::zeros({3, H}, opts);
  auto Y = at::empty({T, B, H}, opts);
  auto acts = at::empty({save ? T : 1, B, 5 * H}, opts);
  auto alphas = at::empty({save ? T : 1, B, K}, opts);
  auto C = save ? at::empty({T, B, H}, opts) : at::empty({0}, opts);
  auto h = h0.contiguous().clone(), h_next = at::empty_like(h);
  auto c = c0.contiguous().clone(), c_next = at::empty_like(c);
  auto h_in = has_mask ? at::empty_like(h) : h;
  auto g = at::empty({B, 4 * H}, opts), u = at::empty({B, H}, opts);
  const rnnlab::PackedProduct recurrent(weight_hh, true);  // h_in R^T
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "srlstm_forward", [&] {
    const scalar_t *sp = S.data_ptr<scalar_t>(), *pp = P.data_ptr<scalar_t>();
    const scalar_t tau_t = static_cast<scalar_t>(tau);
    for (int64_t t = 0; t < T; ++t) {
      if (has_mask) at::mul_out(h_in, h, mask);
      recurrent(g, h_in);
      const int64_t s = save ? t : 0;
      const scalar_t *xt = x_proj[t].data_ptr<scalar_t>(), *gp = g.data_ptr<scalar_t>();
      const scalar_t *hp = h.data_ptr<scalar_t>(), *cp = c.data_ptr<scalar_t>();
      scalar_t *ac = acts[s].data_ptr<scalar_t>(), *al = alphas[s].data_ptr<scalar_t>();
      scalar_t *hn = h_next.data_ptr<scalar_t>(), *cn = c_next.data_ptr<scalar_t>();
      scalar_t *out = Y[t].data_ptr<scalar_t>(), *up = u.data_ptr<scalar_t>();
      const uint8_t* vt = valid_at(valid_u8, t);
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t o = b * H;
          if (vt != nullptr && !vt[b]) {
            std::copy(hp + o, hp + o + H, hn + o);
            std::copy(cp + o, cp + o + H, cn + o);
            std::fill(out + o, out + o + H, scalar_t(0));
            std::fill(ac + b * 5 * H, ac + (b + 1) * 5 * H, scalar_t(0));
            std::fill(al + b * K, al + (b + 1) * K, scalar_t(0));
            continue;
          }
          srlstm_gates<scalar_t>(H, xt + b * 4 * H, gp + b * 4 * H, pp, cp + o, ac + b * 5 * H,
                                 cn + o, up + o);
          pull_row<scalar_t>(H, K, sp, tau_t, up + o, al + b * K, hn + o);
          std::copy(hn + o, hn + o + H, out + o);
        }
      });
      if (save) C[t].copy_(c_next);
      std::swap(h, h_next);
      std::swap(c, c_next);
      if (!has_mask) h_in = h;
    }
  });
  if (!save) {
    acts = at::empty({0}, opts);
    alphas = at::empty({0}, opts);
  }
  return {Y, h, c, acts, C, alphas};
}

std::vector<at::Tensor> srlstm_backward(at::Tensor dY, at::Tensor dhT, at::Tensor dcT,
                                        at::Tensor acts, at::Tensor C, at::Tensor alphas,
                                        at::Tensor Y, at::Tensor h0, at::Tensor c0,
                                        at::Tensor weight_hh, at::Tensor peephole,
                                        at::Tensor centroids, at::Tensor valid, at::Tensor rmask,
                                        double tau) {
  dY = dY.contiguous();
  acts = acts.contiguous();
  alphas = alphas.contiguous();
  C = C.contiguous();
  Y = Y.contiguous();
  const auto h_first = h0.contiguous(), c_first = c0.contiguous();
  const int64_t T = dY.size(0), B = dY.size(1), H = dY.size(2), K = centroids.size(0);
  const auto opts = dY.options();
  const auto valid_u8 = as_bytes(valid);
  const bool has_mask = given(rmask);
  const auto mask = has_mask ? rmask.contiguous() : at::Tensor();
  const auto S = centroids.contiguous();
  const bool peep = given(peephole);
  const auto P = peep ? peephole.contiguous() : at::zeros({3, H}, opts);
  auto dX = at::empty({T, B, 4 * H}, opts);  // every row written below
  auto G = at::empty({T, B, H}, opts), E = at::empty({T, B, K}, opts);
  auto dh = dhT.contiguous().clone(), dh_next = at::empty_like(dh);
  auto dc = dcT.contiguous().clone(), dc_next = at::empty_like(dc);
  auto du = at::empty_like(dh);
  auto dpeep_rows = at::zeros({B, 3 * H}, opts.dtype(at::kDouble));  // one row per batch row
  const rnnlab::PackedProduct back(weight_hh, false);  // dProd R
  rnnlab::ChunkedWeightGrad dR_chunks(T, B, 4 * H, {{0, 4 * H, Y, h_first, mask}}, opts);
  AT_DISPATCH_FLOATING_TYPES(dY.scalar_type(), "srlstm_backward", [&] {
    const scalar_t *sp = S.data_ptr<scalar_t>(), *pp = P.data_ptr<scalar_t>();
    const scalar_t tau_t = static_cast<scalar_t>(tau);
    double* dpk = dpeep_rows.data_ptr<double>();
    for (int64_t t = T - 1; t >= 0; --t) {
      const uint8_t* vt = valid_at(valid_u8, t);
      const scalar_t* cp = (t == 0 ? c_first : C[t - 1]).data_ptr<scalar_t>();
      const scalar_t *ct = C[t].data_ptr<scalar_t>(), *ac = acts[t].data_ptr<scalar_t>();
      const scalar_t *al = alphas[t].data_ptr<scalar_t>(), *dYt = dY[t].data_ptr<scalar_t>();
      const scalar_t *dhp = dh.data_ptr<scalar_t>(), *dcp = dc.data_ptr<scalar_t>();
      scalar_t *gt = G[t].data_ptr<scalar_t>(), *et = E[t].data_ptr<scalar_t>();
      scalar_t *dup = du.data_ptr<scalar_t>(), *dcn = dc_next.data_ptr<scalar_t>();
      scalar_t* dx = dX[t].data_ptr<scalar_t>();
      const auto dProd_t = dR_chunks.slot(t);
      scalar_t* dpr = dProd_t.data_ptr<scalar_t>();
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t o = b * H;
          if (vt != nullptr && !vt[b]) {  // padding: the gradients pass to the carried state
            std::fill(dx + b * 4 * H, dx + (b + 1) * 4 * H, scalar_t(0));
            std::fill(dpr + b * 4 * H, dpr + (b + 1) * 4 * H, scalar_t(0));
            std::fill(gt + o, gt + o + H, scalar_t(0));
            std::fill(et + b * K, et + (b + 1) * K, scalar_t(0));
            std::copy(dcp + o, dcp + o + H, dcn + o);
            continue;
          }
          for (int64_t k = o; k < o + H; ++k) gt[k] = dhp[k] + dYt[k];
          pull_row_backward<scalar_t>(H, K, sp, tau_t, al + b * K, gt + o, et + b * K, dup + o);
          srlstm_backward_row<scalar_t>(H, ac + b * 5 * H, pp, cp + o, ct + o, dup + o, dcp + o,
                                        dx + b * 4 * H, dpr + b * 4 * H, dcn + o,
                                        dpk + b * 3 * H);
        }
      });
      back(dh_next, dProd_t);
      dR_chunks.done(t);
      if (has_mask) dh_next.mul_(mask);
      if (vt != nullptr) {
        scalar_t* dhn = dh_next.data_ptr<scalar_t>();
        for (int64_t b = 0; b < B; ++b)
          if (!vt[b]) std::copy(dhp + b * H, dhp + (b + 1) * H, dhn + b * H);
      }
      std::swap(dh, dh_next);
      std::swap(dc, dc_next);
    }
  });
  const auto U = acts.narrow(2, 3 * H, H) * acts.narrow(2, 4 * H, H);  // u = o tanh(c)
  const auto dpeep = peep ? dpeep_rows.sum(0).view({3, H}).to(dY.scalar_type())
                          : at::empty({0}, opts);
  return {dX, dR_chunks.result(), dpeep, centroid_grad(E, U, alphas, G), dh, dc};
}

}  // namespace

void register_state_regularised(pybind11::module& m) {
  using release = pybind11::call_guard<pybind11::gil_scoped_release>;
  m.def("srgru_forward", &srgru_forward, "fused SR-GRU forward (CPU)", release());
  m.def("srgru_backward", &srgru_backward, "fused SR-GRU backward (CPU)", release());
  m.def("srlstm_forward", &srlstm_forward, "fused SR-LSTM(-P) forward (CPU)", release());
  m.def("srlstm_backward", &srlstm_backward, "fused SR-LSTM(-P) backward (CPU)", release());
}
