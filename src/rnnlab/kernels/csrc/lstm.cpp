// Fused CPU kernels for the LSTM family of rnnlab (Greff et al. 2017 variants).
//
// The input projection x_proj = W x + b for all time steps is computed by the caller as one
// matrix product. Here only the recurrent product stays in the time loop; the gate arithmetic
// of a step is one pass over memory. The backward pass keeps only the recurrent product
// dpre_t R in its loop and forms dR, dW_gg and the peephole gradients after it, as single
// large products (the scheme of haste and cuDNN).
//
// layout = {off_i, off_f, off_z, off_o, row_pi, row_pf, row_po} in units of H (-1: absent);
// flags  = {coupled, g_act, h_act, fgr}.
// valid (T, B) uint8 must mark a prefix of each column (as lengths produce).
// Saved activations `acts` are (T, B, 4H): i, f, z, o after their nonlinearities, with absent
// gates stored as 1 (and f = 1 - i for CIFG).
//
// Layer norm (Ba et al. 2016, sec. 3.1), on when its gains are given: pre = x_proj + g_hh LN(R y)
// (x_proj already holds g_ih LN(W x) + b) and y_t = h(g_c LN(c_t) + b_c) * o_t. The forward saves
// the normalised rows and their 1/sigma; the backward turns d pre into d(R y) through the
// normalisation inside the loop (a row reduction) and forms the gains' gradients after it; dR is
// then formed from d(R y) a chunk of steps at a time (weight_grad.h), not after the loop.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include "layer_norm.h"
#include "packed_gemm.h"
#include "safe_math.h"
#include "weight_grad.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

namespace {

struct Layout {
  int64_t off_i, off_f, off_z, off_o, p_i, p_f, p_o;
  bool coupled, g_act, h_act, fgr;
};

Layout make_layout(const std::vector<int64_t>& l, const std::vector<int64_t>& f) {
  TORCH_CHECK(l.size() == 7 && f.size() == 4, "lstm kernel: bad layout");
  return {l[0], l[1], l[2], l[3], l[4], l[5], l[6], f[0] != 0, f[1] != 0, f[2] != 0, f[3] != 0};
}

inline bool defined(const at::Tensor& t) { return t.defined() && t.numel() > 0; }

// Layer norm of c_t (before the output activation): gain, bias, and where to save the
// normalised rows and 1/sigma (nullptr: off, or nothing saved).
template <typename scalar_t>
struct CellNorm {
  const scalar_t* gain = nullptr;
  const scalar_t* bias = nullptr;
  // Forward: unused (LN(c) goes to scratch). Backward: where LN(c) (B, H), recomputed from c, is
  // written for the gains' gradients.
  scalar_t* xhat = nullptr;
  bool on() const { return gain != nullptr; }
};

// Every inner loop below runs over the H units of one batch row with its branches hoisted out,
// so that the compiler vectorises it (with -ffast-math, exp and tanh go to glibc's vector math).
// Absent peepholes and absent gate-recurrence terms read a row of zeros.

template <typename scalar_t>
inline void sigmoid_row(scalar_t* out, const scalar_t* pre, const scalar_t* xp,
                        const scalar_t* peep, const scalar_t* c, const scalar_t* gg, int64_t H) {
  for (int64_t h = 0; h < H; ++h) {
    out[h] = rnnlab::sigmoid(pre[h] + xp[h] + peep[h] * c[h] + gg[h]);
  }
}

template <typename scalar_t>
inline void fill_row(scalar_t* out, scalar_t value, int64_t H) {
  for (int64_t h = 0; h < H; ++h) out[h] = value;
}

// pre (B, GH) is R y_{t-1} (with layer norm: x_proj + g LN(R y), and xp nullptr); xp (B, GH)
// is x_proj's row of the step, added here rather than copied into pre before the product.
template <typename scalar_t>
void forward_step(const Layout& L, int64_t B, int64_t H, int64_t GH, const scalar_t* pre,
                  const scalar_t* xp, const scalar_t* gg, const scalar_t* P, const scalar_t* zeros,
                  const uint8_t* valid, const scalar_t* y_prev, const scalar_t* c_prev,
                  const scalar_t* a_prev, scalar_t* y_new, scalar_t* c_new, scalar_t* a_new,
                  scalar_t* y_out, scalar_t* acts, scalar_t* c_save, const scalar_t* zone,
                  scalar_t* chat_save, const CellNorm<scalar_t>& norm) {
  const scalar_t* p_i = L.p_i >= 0 ? P + L.p_i * H : zeros;
  const scalar_t* p_f = L.p_f >= 0 ? P + L.p_f * H : zeros;
  const scalar_t* p_o = L.p_o >= 0 ? P + L.p_o * H : zeros;
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<scalar_t> scratch(acts == nullptr ? 4 * H : 0);
    std::vector<scalar_t> c_norm(norm.on() ? 2 * H : 0);  // g LN(c) + b, and LN(c)
    for (int64_t b = b0; b < b1; ++b) {
      const scalar_t* pr = pre + b * GH;
      const scalar_t* xr = xp != nullptr ? xp + b * GH : nullptr;
      // x_proj's block k of this row, or a row of zeros
      const auto xb = [&](int64_t k) { return xr != nullptr ? xr + k * H : zeros; };
      const scalar_t* cp = c_prev + b * H;
      scalar_t* gates = acts != nullptr ? acts + b * 4 * H : scratch.data();
      scalar_t *I = gates, *F = gates + H, *Z = gates + 2 * H, *O = gates + 3 * H;
      const scalar_t* g_i = L.fgr ? gg + b * 3 * H : zeros;
      const scalar_t* g_f = L.fgr ? gg + b * 3 * H + H : zeros;
      const scalar_t* g_o = L.fgr ? gg + b * 3 * H + 2 * H : zeros;
      const scalar_t *pz = pr + L.off_z * H, *xz = xb(L.off_z);
      if (L.g_act) {
        for (int64_t h = 0; h < H; ++h) Z[h] = rnnlab::tanh(pz[h] + xz[h]);
      } else {
        for (int64_t h = 0; h < H; ++h) Z[h] = pz[h] + xz[h];
      }
      if (L.off_i >= 0) sigmoid_row(I, pr + L.off_i * H, xb(L.off_i), p_i, cp, g_i, H);
      else fill_row(I, scalar_t(1), H);
      if (L.coupled) {
        for (int64_t h = 0; h < H; ++h) F[h] = scalar_t(1) - I[h];
      } else if (L.off_f >= 0) {
        sigmoid_row(F, pr + L.off_f * H, xb(L.off_f), p_f, cp, g_f, H);
      } else {
        fill_row(F, scalar_t(1), H);
      }
      scalar_t* cn = c_new + b * H;
      for (int64_t h = 0; h < H; ++h) cn[h] = Z[h] * I[h] + cp[h] * F[h];
      if (L.off_o >= 0) sigmoid_row(O, pr + L.off_o * H, xb(L.off_o), p_o, cn, g_o, H);
      else fill_row(O, scalar_t(1), H);
      scalar_t* yn = y_new + b * H;
      const scalar_t* c_out = cn;  // what the output activation sees
      if (norm.on()) {
        scalar_t* co = c_norm.data();
        scalar_t* xh = co + H;
        rnnlab::normalise_row(cn, xh, H);
        for (int64_t h = 0; h < H; ++h) co[h] = norm.gain[h] * xh[h] + norm.bias[h];
        c_out = co;
      }
      if (L.h_act) {
        for (int64_t h = 0; h < H; ++h) yn[h] = rnnlab::tanh(c_out[h]) * O[h];
      } else {
        for (int64_t h = 0; h < H; ++h) yn[h] = c_out[h] * O[h];
      }
      if (zone != nullptr) {  // zoneout: each unit keeps its previous value where zone is 1
        if (chat_save != nullptr) std::copy(cn, cn + H, chat_save + b * H);
        const scalar_t *zy = zone + b * 2 * H, *zc = zy + H, *yp = y_prev + b * H;
        for (int64_t h = 0; h < H; ++h) cn[h] += zc[h] * (cp[h] - cn[h]);
        for (int64_t h = 0; h < H; ++h) yn[h] += zy[h] * (yp[h] - yn[h]);
      }
      if (c_save != nullptr) std::copy(cn, cn + H, c_save + b * H);
      const bool v = valid == nullptr || valid[b];
      if (v) {
        std::copy(yn, yn + H, y_out + b * H);
      } else {  // padding: the state carries over and the output is zero
        std::copy(y_prev + b * H, y_prev + (b + 1) * H, yn);
        std::copy(cp, cp + H, cn);
        fill_row(y_out + b * H, scalar_t(0), H);
      }
      if (a_new != nullptr) {
        scalar_t* an = a_new + b * 3 * H;
        if (v) {
          std::copy(I, I + 2 * H, an);  // i and f are adjacent
          std::copy(O, O + H, an + 2 * H);
        } else {
          std::copy(a_prev + b * 3 * H, a_prev + (b + 1) * 3 * H, an);
        }
      }
    }
  });
}

template <typename scalar_t>
void backward_step(const Layout& L, int64_t B, int64_t H, int64_t GH, const scalar_t* acts,
                   const scalar_t* ct, const scalar_t* cprev, const scalar_t* dYt,
                   const uint8_t* valid, const scalar_t* dy, const scalar_t* dc,
                   const scalar_t* da, const scalar_t* P, const scalar_t* zeros, scalar_t* dpre,
                   scalar_t* dc_prev, const scalar_t* zone, const CellNorm<scalar_t>& norm,
                   scalar_t* d_cout) {
  const scalar_t* p_i = L.p_i >= 0 ? P + L.p_i * H : zeros;
  const scalar_t* p_f = L.p_f >= 0 ? P + L.p_f * H : zeros;
  const scalar_t* p_o = L.p_o >= 0 ? P + L.p_o * H : zeros;
  // 0/1 factors instead of branches: absent gates contribute nothing.
  const scalar_t k_i = L.off_i >= 0, k_f = L.off_f >= 0 && !L.coupled, k_o = L.off_o >= 0;
  const scalar_t k_c = L.coupled, k_g = L.g_act;
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<scalar_t> buf(norm.on() ? 7 * H : 5 * H);
    scalar_t *hc = buf.data(), *dpi = hc + H, *dpf = hc + 2 * H, *dpz = hc + 3 * H,
             *dpo = hc + 4 * H;
    // With layer norm on c: the gradient reaching c through g LN(c) + b, and its d LN(c).
    scalar_t *dc_norm = norm.on() ? hc + 5 * H : nullptr, *dxhat = norm.on() ? hc + 6 * H : nullptr;
    const scalar_t k_n = norm.on(), k_plain = !norm.on();
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r = b * H;
      if (valid != nullptr && !valid[b]) {  // padding: the state passes through unchanged
        std::copy(dc + r, dc + r + H, dc_prev + r);
        fill_row(dpre + b * GH, scalar_t(0), GH);
        if (d_cout != nullptr) fill_row(d_cout + r, scalar_t(0), H);
        if (norm.on()) fill_row(norm.xhat + r, scalar_t(0), H);
        continue;
      }
      const scalar_t *I = acts + b * 4 * H, *F = I + H, *Z = I + 2 * H, *O = I + 3 * H;
      const scalar_t *c = ct + r, *cp = cprev + r;
      const scalar_t* da_i = L.fgr ? da + b * 3 * H : zeros;
      const scalar_t* da_f = L.fgr ? da + b * 3 * H + H : zeros;
      const scalar_t* da_o = L.fgr ? da + b * 3 * H + 2 * H : zeros;
      const scalar_t* c_out = c;  // what the output activation saw
      scalar_t rstd_c = 0;
      if (norm.on()) {  // recompute LN(c) from c (bit for bit the forward's) and g LN(c) + b
        scalar_t* xh = norm.xhat + r;
        rstd_c = rnnlab::normalise_row(c, xh, H);
        for (int64_t h = 0; h < H; ++h) hc[h] = norm.gain[h] * xh[h] + norm.bias[h];
        c_out = hc;
      }
      if (L.h_act) {
        for (int64_t h = 0; h < H; ++h) hc[h] = rnnlab::tanh(c_out[h]);
      } else if (!norm.on()) {
        for (int64_t h = 0; h < H; ++h) hc[h] = c[h];
      }
      const scalar_t k_h = L.h_act;
      // With zoneout, y_t = y^ + zy (y_{t-1} - y^) and c_t likewise: the cell's own outputs y^, c^
      // get (1 - z) of the gradient and the previous state z of it (added to dc_prev here and to
      // dy_prev by the caller). Without, z reads a row of zeros.
      const scalar_t* zy = zone != nullptr ? zone + b * 2 * H : zeros;
      const scalar_t* zc = zone != nullptr ? zy + H : zeros;
      const scalar_t* via_norm = zeros;  // d c_t through the layer norm (when on)
      if (norm.on()) {
        scalar_t* dco = d_cout + r;  // d(g LN(c) + b), kept for the gains' gradients
        for (int64_t h = 0; h < H; ++h) {
          const scalar_t gy = (dy[r + h] + dYt[r + h]) * (1 - zy[h]);
          dco[h] = gy * O[h] * (1 - k_h * hc[h] * hc[h]);
          dxhat[h] = dco[h] * norm.gain[h];
        }
        rnnlab::normalise_row_backward(dxhat, norm.xhat + r, rstd_c, dc_norm, H);
        via_norm = dc_norm;
      }
      for (int64_t h = 0; h < H; ++h) {
        const scalar_t gy = (dy[r + h] + dYt[r + h]) * (1 - zy[h]);
        const scalar_t go = gy * hc[h] + da_o[h];
        const scalar_t d_o = k_o * go * O[h] * (1 - O[h]);
        const scalar_t gc = dc[r + h] * (1 - zc[h]) +
                            k_plain * gy * O[h] * (1 - k_h * hc[h] * hc[h]) + k_n * via_norm[h] +
                            d_o * p_o[h];
        const scalar_t gf = gc * cp[h] + da_f[h];
        const scalar_t gi = gc * Z[h] + da_i[h] - k_c * gf;  // CIFG: f = 1 - i
        const scalar_t d_i = k_i * gi * I[h] * (1 - I[h]);
        const scalar_t d_f = k_f * gf * F[h] * (1 - F[h]);
        dpz[h] = gc * I[h] * (1 - k_g * Z[h] * Z[h]);
        dpi[h] = d_i;
        dpf[h] = d_f;
        dpo[h] = d_o;
        dc_prev[r + h] = gc * F[h] + d_i * p_i[h] + d_f * p_f[h] + zc[h] * dc[r + h];
      }
      scalar_t* dp = dpre + b * GH;
      if (L.off_i >= 0) std::copy(dpi, dpi + H, dp + L.off_i * H);
      if (L.off_f >= 0) std::copy(dpf, dpf + H, dp + L.off_f * H);
      std::copy(dpz, dpz + H, dp + L.off_z * H);
      if (L.off_o >= 0) std::copy(dpo, dpo + H, dp + L.off_o * H);
    }
  });
}

}  // namespace

std::vector<at::Tensor> lstm_forward(at::Tensor x_proj, at::Tensor weight_hh, at::Tensor peephole,
                                     at::Tensor weight_gg, at::Tensor y0, at::Tensor c0,
                                     at::Tensor a0, at::Tensor valid, at::Tensor rmask,
                                     at::Tensor zone, at::Tensor ln_hh, at::Tensor ln_c_w,
                                     at::Tensor ln_c_b, std::vector<int64_t> layout,
                                     std::vector<int64_t> flags, bool save) {
  const Layout L = make_layout(layout, flags);
  x_proj = x_proj.contiguous();
  const int64_t T = x_proj.size(0), B = x_proj.size(1), GH = x_proj.size(2);
  const int64_t H = weight_hh.size(1);
  const bool has_mask = defined(rmask), has_valid = defined(valid);
  auto Y = at::empty({T, B, H}, x_proj.options());
  auto acts = save ? at::empty({T, B, 4 * H}, x_proj.options()) : at::Tensor();
  auto C = save ? at::empty({T, B, H}, x_proj.options()) : at::Tensor();
  const bool has_zone = defined(zone);
  const auto zone_c = has_zone ? zone.contiguous() : at::Tensor();  // (T, B, 2H): y, c
  auto Chat = save && has_zone ? at::empty({T, B, H}, x_proj.options()) : at::Tensor();
  auto y = y0.contiguous().clone(), c = c0.contiguous().clone();
  auto y_next = at::empty_like(y), c_next = at::empty_like(c);
  at::Tensor a, a_next;
  if (L.fgr) {
    a = a0.contiguous().clone();
    a_next = at::empty_like(a);
  }
  const auto valid_u8 = has_valid ? valid.to(at::kByte).contiguous() : at::Tensor();
  const auto P = defined(peephole) ? peephole.contiguous() : at::Tensor();
  const auto zeros = at::zeros({H}, x_proj.options());
  const bool ln_r = defined(ln_hh), ln_c = defined(ln_c_w);
  const auto opts = x_proj.options();
  // Layer norm's saved rows: LN(R y) (T, B, GH), LN(c) (T, B, H), and their 1/sigma (T, B).
  auto Rhat = ln_r ? at::empty({save ? T : 1, B, GH}, opts) : at::empty({0}, opts);
  auto RstdR = ln_r && save ? at::empty({T, B}, opts) : at::empty({0}, opts);
  const auto g_hh = ln_r ? ln_hh.contiguous() : at::Tensor();
  const auto g_c = ln_c ? ln_c_w.contiguous() : at::Tensor();
  const auto b_c = ln_c ? ln_c_b.contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "lstm_forward", [&] {
    // Buffers reused at every step: no allocation inside the loop.
    const rnnlab::PackedProduct recurrent(weight_hh, true);  // y R^T
    std::optional<rnnlab::PackedProduct> gate_recurrent;  // FGR's a W_gg^T
    if (L.fgr) gate_recurrent.emplace(weight_gg, true);
    auto pre = at::empty({B, GH}, opts);
    auto r = ln_r ? at::empty({B, GH}, opts) : at::Tensor();
    auto y_in = has_mask ? at::empty_like(y) : at::Tensor();
    auto gg = L.fgr ? at::empty({B, 3 * H}, opts) : at::Tensor();
    for (int64_t t = 0; t < T; ++t) {
      if (has_mask) at::mul_out(y_in, y, rmask);
      if (ln_r) {
        recurrent(r, has_mask ? y_in : y);
        rnnlab::ln_recurrent_rows<scalar_t>(B, GH, r.data_ptr<scalar_t>(),
                                    x_proj[t].data_ptr<scalar_t>(), GH,
                                    g_hh.data_ptr<scalar_t>(), pre.data_ptr<scalar_t>(),
                                    Rhat[save ? t : 0].data_ptr<scalar_t>(),
                                    save ? RstdR[t].data_ptr<scalar_t>() : nullptr);
      } else {
        recurrent(pre, has_mask ? y_in : y);
      }
      if (L.fgr) (*gate_recurrent)(gg, a);
      CellNorm<scalar_t> norm;
      if (ln_c) {
        norm.gain = g_c.data_ptr<scalar_t>();
        norm.bias = b_c.data_ptr<scalar_t>();
      }
      forward_step<scalar_t>(
          L, B, H, GH, pre.data_ptr<scalar_t>(),
          ln_r ? nullptr : x_proj.data_ptr<scalar_t>() + t * B * GH,
          L.fgr ? gg.data_ptr<scalar_t>() : nullptr,
          P.defined() ? P.data_ptr<scalar_t>() : nullptr, zeros.data_ptr<scalar_t>(),
          has_valid ? valid_u8[t].data_ptr<uint8_t>() : nullptr, y.data_ptr<scalar_t>(),
          c.data_ptr<scalar_t>(), L.fgr ? a.data_ptr<scalar_t>() : nullptr,
          y_next.data_ptr<scalar_t>(), c_next.data_ptr<scalar_t>(),
          L.fgr ? a_next.data_ptr<scalar_t>() : nullptr, Y[t].data_ptr<scalar_t>(),
          save ? acts[t].data_ptr<scalar_t>() : nullptr,
          save ? C[t].data_ptr<scalar_t>() : nullptr,
          has_zone ? zone_c[t].data_ptr<scalar_t>() : nullptr,
          save && has_zone ? Chat[t].data_ptr<scalar_t>() : nullptr, norm);
      std::swap(y, y_next);
      std::swap(c, c_next);
      if (L.fgr) std::swap(a, a_next);
    }
  });
  if (!L.fgr) a = at::empty({0}, x_proj.options());
  if (!save) {
    acts = at::empty({0}, x_proj.options());
    C = at::empty({0}, x_proj.options());
  }
  if (!Chat.defined()) Chat = at::empty({0}, x_proj.options());
  if (!save) Rhat = at::empty({0}, opts);
  return {Y, y, c, a, acts, C, Chat, Rhat, RstdR};
}

std::vector<at::Tensor> lstm_backward(at::Tensor dY, at::Tensor dyT, at::Tensor dcT,
                                      at::Tensor daT, at::Tensor acts, at::Tensor C,
                                      at::Tensor Y, at::Tensor y0, at::Tensor c0, at::Tensor a0,
                                      at::Tensor weight_hh, at::Tensor peephole,
                                      at::Tensor weight_gg, at::Tensor valid, at::Tensor rmask,
                                      at::Tensor zone, at::Tensor Chat, at::Tensor ln_hh,
                                      at::Tensor ln_c_w, at::Tensor ln_c_b, at::Tensor Rhat,
                                      at::Tensor RstdR,
                                      std::vector<int64_t> layout, std::vector<int64_t> flags) {
  const Layout L = make_layout(layout, flags);
  dY = dY.contiguous();
  c0 = c0.contiguous();  // pointers into it are taken in the loop
  const int64_t T = dY.size(0), B = dY.size(1), H = dY.size(2);
  const int64_t GH = weight_hh.size(0);
  const bool has_mask = defined(rmask), has_valid = defined(valid);
  const auto valid_u8 = has_valid ? valid.to(at::kByte).contiguous() : at::Tensor();
  const auto P = defined(peephole) ? peephole.contiguous() : at::Tensor();
  // Every row of dPre is written by backward_step (padded rows with zeros): no fill needed.
  auto dPre = at::empty({T, B, GH}, dY.options());
  auto dy = dyT.contiguous().clone(), dc = dcT.contiguous().clone();
  at::Tensor da;
  if (L.fgr) da = daT.contiguous().clone();
  auto dc_prev = at::empty_like(dc);
  auto dy_prev = at::empty_like(dy);
  at::Tensor da_prev;
  // FGR's dW_gg = sum_t d(ifo)_t^T a_{t-1}, a chunk of steps at a time (weight_grad.h).
  std::optional<rnnlab::ChunkedWeightGrad> dWgg_chunks;
  if (L.fgr) {
    da_prev = at::empty_like(da);
    // a_{t-1} = (i, f, o)_{t-1}: read from the saved activations (i f z o) shifted by one
    // step, a0 first; i f fill dW_gg's first 2H columns, o its last H.
    const auto a0c = a0.contiguous();
    using Block = rnnlab::ChunkedWeightGrad::Block;
    dWgg_chunks.emplace(
        T, B, 3 * H,
        std::vector<Block>{
            {0, 3 * H, acts.narrow(2, 0, 2 * H), a0c.narrow(1, 0, 2 * H), at::Tensor(), 0},
            {0, 3 * H, acts.narrow(2, 3 * H, H), a0c.narrow(1, 2 * H, H), at::Tensor(), 2 * H}},
        dY.options());
  }
  const auto zeros = at::zeros({H}, dY.options());
  const bool has_zone = defined(zone);
  const auto zone_c = has_zone ? zone.contiguous() : at::Tensor();
  const auto& c_cell = has_zone ? Chat : C;  // c^_t, the cell's own (before zoneout)
  const bool ln_r = defined(ln_hh), ln_c = defined(ln_c_w);
  // With LN(R y), d(R y) differs from d pre: dR is formed from it a chunk of steps at a time,
  // against y_{t-1} read from Y (masked where recurrent dropout is on).
  std::optional<rnnlab::ChunkedWeightGrad> dR_chunks;
  if (ln_r) {
    dR_chunks.emplace(T, B, GH,
                      std::vector<rnnlab::ChunkedWeightGrad::Block>{
                          {0, GH, Y, y0, has_mask ? rmask : at::Tensor()}},
                      dY.options());
  }
  // With LN(c): d(g LN(c) + b) and LN(c) of a step (B, H), summed into the gains' gradients.
  auto dCout = ln_c ? at::empty({B, H}, dY.options()) : at::Tensor();
  auto Xc = ln_c ? at::empty({B, H}, dY.options()) : at::Tensor();
  std::vector<double> dg_c_acc(ln_c ? H : 0, 0.0), db_c_acc(ln_c ? H : 0, 0.0);
  const auto g_hh = ln_r ? ln_hh.contiguous() : at::Tensor();
  const auto g_c = ln_c ? ln_c_w.contiguous() : at::Tensor();
  const auto b_c = ln_c ? ln_c_b.contiguous() : at::Tensor();

  const rnnlab::PackedProduct recurrent(weight_hh, false);  // d(R y) R
  std::optional<rnnlab::PackedProduct> gate_back;  // FGR's d(ifo) W_gg
  if (L.fgr) gate_back.emplace(weight_gg, false);
  AT_DISPATCH_FLOATING_TYPES(dY.scalar_type(), "lstm_backward", [&] {
    for (int64_t t = T - 1; t >= 0; --t) {
      CellNorm<scalar_t> norm;
      if (ln_c) {
        norm.gain = g_c.data_ptr<scalar_t>();
        norm.bias = b_c.data_ptr<scalar_t>();
        norm.xhat = Xc.data_ptr<scalar_t>();
      }
      backward_step<scalar_t>(
          L, B, H, GH, acts[t].data_ptr<scalar_t>(), c_cell[t].data_ptr<scalar_t>(),
          (t > 0 ? C[t - 1] : c0).data_ptr<scalar_t>(), dY[t].data_ptr<scalar_t>(),
          has_valid ? valid_u8[t].data_ptr<uint8_t>() : nullptr, dy.data_ptr<scalar_t>(),
          dc.data_ptr<scalar_t>(), L.fgr ? da.data_ptr<scalar_t>() : nullptr,
          P.defined() ? P.data_ptr<scalar_t>() : nullptr, zeros.data_ptr<scalar_t>(),
          dPre[t].data_ptr<scalar_t>(), dc_prev.data_ptr<scalar_t>(),
          has_zone ? zone_c[t].data_ptr<scalar_t>() : nullptr, norm,
          ln_c ? dCout.data_ptr<scalar_t>() : nullptr);
      if (ln_c) {
        const scalar_t* dco = dCout.data_ptr<scalar_t>();
        rnnlab::column_dot_add<scalar_t>(B, H, dco, H, Xc.data_ptr<scalar_t>(), H,
                                         dg_c_acc.data());
        for (int64_t b = 0; b < B; ++b)
          for (int64_t h = 0; h < H; ++h) db_c_acc[h] += dco[b * H + h];
      }
      const auto dRy = ln_r ? dR_chunks->slot(t) : dPre[t];
      if (ln_r) {
        rnnlab::ln_recurrent_rows_backward<scalar_t>(
            B, GH, dPre[t].data_ptr<scalar_t>(), GH, g_hh.data_ptr<scalar_t>(),
            Rhat[t].data_ptr<scalar_t>(), RstdR[t].data_ptr<scalar_t>(),
            dRy.data_ptr<scalar_t>(), GH);
      }
      // Only the recurrent products stay in the loop.
      recurrent(dy_prev, dRy);
      if (ln_r) dR_chunks->done(t);
      if (has_mask) dy_prev.mul_(rmask);
      if (has_zone) {  // the zoned-out part of y_t is y_{t-1}
        const scalar_t* zt = zone_c[t].data_ptr<scalar_t>();
        const scalar_t *dyc = dy.data_ptr<scalar_t>(), *dYt = dY[t].data_ptr<scalar_t>();
        scalar_t* dyp = dy_prev.data_ptr<scalar_t>();
        for (int64_t b = 0; b < B; ++b)
          for (int64_t h = 0; h < H; ++h)
            dyp[b * H + h] += zt[b * 2 * H + h] * (dyc[b * H + h] + dYt[b * H + h]);
      }
      if (L.fgr) {  // FGR has all four blocks i, f, z, o: take the rows of i, f and o
        auto d_ifo = dWgg_chunks->slot(t);
        d_ifo.narrow(1, 0, 2 * H).copy_(dPre[t].narrow(1, 0, 2 * H));
        d_ifo.narrow(1, 2 * H, H).copy_(dPre[t].narrow(1, 3 * H, H));
        (*gate_back)(da_prev, d_ifo);
        dWgg_chunks->done(t);
      }
      if (has_valid) {  // padded rows pass their gradient through unchanged
        const uint8_t* vt = valid_u8[t].data_ptr<uint8_t>();
        scalar_t* dyp = dy_prev.data_ptr<scalar_t>();
        const scalar_t* dyc = dy.data_ptr<scalar_t>();
        scalar_t* dap = L.fgr ? da_prev.data_ptr<scalar_t>() : nullptr;
        const scalar_t* dac = L.fgr ? da.data_ptr<scalar_t>() : nullptr;
        for (int64_t b = 0; b < B; ++b) {
          if (vt[b]) continue;
          std::copy(dyc + b * H, dyc + (b + 1) * H, dyp + b * H);
          if (L.fgr) std::copy(dac + b * 3 * H, dac + (b + 1) * 3 * H, dap + b * 3 * H);
        }
      }
      std::swap(dy, dy_prev);
      std::swap(dc, dc_prev);
      if (L.fgr) std::swap(da, da_prev);
    }
  });

  // Weight gradients as single large products over all steps.
  at::Tensor dR;
  if (ln_r) {
    dR = dR_chunks->result();
  } else {
    auto y_prev = at::cat({y0.unsqueeze(0), Y.narrow(0, 0, T - 1)}, 0);  // (T, B, H)
    if (has_mask) y_prev = y_prev * rmask;
    dR = at::mm(dPre.view({T * B, GH}).t(), y_prev.reshape({T * B, H}));
  }
  at::Tensor dg_hh = at::empty({0}, dY.options()), dg_c = dg_hh, db_c = dg_hh;
  if (ln_r) dg_hh = rnnlab::column_dot(dPre, Rhat);
  if (ln_c) {
    const auto opts64 = dY.options().dtype(at::kDouble);
    dg_c = at::tensor(dg_c_acc, opts64).to(dY.scalar_type());
    db_c = at::tensor(db_c_acc, opts64).to(dY.scalar_type());
  }
  at::Tensor dP = at::empty({0}, dY.options());
  if (P.defined()) {
    const int64_t offs[3] = {L.off_i, L.off_f, L.off_o};
    const int64_t prow[3] = {L.p_i, L.p_f, L.p_o};
    std::vector<std::pair<int64_t, at::Tensor>> found;
    for (int k = 0; k < 3; ++k) {
      if (prow[k] < 0) continue;
      const auto d = dPre.narrow(2, offs[k] * H, H);
      if (k == 2) {  // the output gate's peephole sees c^_t
        found.emplace_back(prow[k], rnnlab::column_dot(d, c_cell));
      } else {  // the input and forget gates' see c_{t-1}: c0, then C shifted by one step
        found.emplace_back(prow[k], rnnlab::column_dot(d.narrow(0, 0, 1), c0.unsqueeze(0)) +
                                        rnnlab::column_dot(d.narrow(0, 1, T - 1),
                                                           C.narrow(0, 0, T - 1)));
      }
    }
    dP = at::zeros_like(P);
    for (auto& [row, g] : found) dP[row].copy_(g);
  }
  at::Tensor dWgg = at::empty({0}, dY.options());
  if (L.fgr) {
    dWgg = dWgg_chunks->result();
  } else {
    da = at::empty({0}, dY.options());
  }
  return {dPre, dR, dP, dWgg, dy, dc, da, dg_hh, dg_c, db_c};
}
