// Fused CPU kernels for the GRUs (torch's form and Chung et al.'s v1) and the tanh RNN.
//
// Same scheme as lstm.cpp: x_proj = W x + b for all steps comes from the caller; only the
// recurrent products stay in the time loops; the weight gradients are single products after them.
// Rows of weight_hh are r, u, n. h_t = n_t + u_t (h_{t-1} - n_t) = (1 - u_t) n_t + u_t h_{t-1}.
// valid (T, B) uint8 must mark a prefix of each column; rmask (B, H) multiplies h_{t-1} where it
// enters the recurrent products.
//
// Layer norm, on when ln_hh (the gains, 3H for the GRUs, H for tanh) is given, normalises the
// recurrent products as the cells' step does: torch's GRU g LN(R h) + b'_h over all 3H rows, v1
// LN(R_ru h) over its 2H rows and LN(R_n (r * h)) over its H rows, tanh LN(R h). The forward saves
// the normalised rows and 1/sigma; the backward takes the products' gradients back through the
// normalisation in the loop and forms the gains' gradients after it.

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

inline bool defined(const at::Tensor& t) { return t.defined() && t.numel() > 0; }

// Padded rows keep the previous state and output zero.
template <typename scalar_t>
void carry_padded(const uint8_t* valid, int64_t B, int64_t H, const scalar_t* prev,
                  scalar_t* next, scalar_t* out) {
  if (valid == nullptr) return;
  for (int64_t b = 0; b < B; ++b) {
    if (valid[b]) continue;
    std::copy(prev + b * H, prev + (b + 1) * H, next + b * H);
    std::fill(out + b * H, out + (b + 1) * H, scalar_t(0));
  }
}

// Padded rows pass the incoming gradient through.
template <typename scalar_t>
void pass_padded(const uint8_t* valid, int64_t B, int64_t H, const scalar_t* incoming,
                 scalar_t* outgoing) {
  if (valid == nullptr) return;
  for (int64_t b = 0; b < B; ++b)
    if (!valid[b]) std::copy(incoming + b * H, incoming + (b + 1) * H, outgoing + b * H);
}

at::Tensor previous_states(const at::Tensor& h0, const at::Tensor& Y, const at::Tensor& rmask) {
  auto prev = at::cat({h0.unsqueeze(0), Y.narrow(0, 0, Y.size(0) - 1)}, 0);  // (T, B, H)
  return defined(rmask) ? prev * rmask : prev;
}

}  // namespace

// acts (T, B, 4H): r, u, n and the recurrent candidate term (R_n h + b'_n for torch's form,
// R_n (r * h) for v1).
std::vector<at::Tensor> gru_forward(at::Tensor x_proj, at::Tensor weight_hh, at::Tensor bias_hh,
                                    at::Tensor h0, at::Tensor valid, at::Tensor rmask,
                                    at::Tensor zone, at::Tensor ln_hh, bool v1, bool save) {
  x_proj = x_proj.contiguous();
  const int64_t T = x_proj.size(0), B = x_proj.size(1), H = weight_hh.size(1);
  const bool has_mask = defined(rmask), has_valid = defined(valid);
  const auto valid_u8 = has_valid ? valid.to(at::kByte).contiguous() : at::Tensor();
  auto Y = at::empty({T, B, H}, x_proj.options());
  auto acts = at::empty({save ? T : 1, B, 4 * H}, x_proj.options());
  auto h = h0.contiguous().clone(), h_next = at::empty_like(h);
  auto h_in = has_mask ? at::empty_like(h) : at::Tensor();
  // h_in R^T (v1: h_in R_ru^T, and (r * h_in) R_n^T), packed once for the loop.
  const rnnlab::PackedProduct first(v1 ? weight_hh.narrow(0, 0, 2 * H) : weight_hh, true);
  std::optional<rnnlab::PackedProduct> second;
  if (v1) second.emplace(weight_hh.narrow(0, 2 * H, H), true);
  auto rh = at::empty({B, v1 ? 2 * H : 3 * H}, x_proj.options());
  auto rhn = at::empty({B, H}, x_proj.options()), r_h = at::empty({B, H}, x_proj.options());
  const bool has_zone = defined(zone);
  const auto zone_c = has_zone ? zone.contiguous() : at::Tensor();  // (T, B, H) keep masks
  const auto opts = x_proj.options();
  const bool ln = defined(ln_hh);
  const int64_t RWidth = v1 ? 2 * H : 3 * H, TS = save ? T : 1;
  // Layer norm's saved rows: LN of the first product (T, B, RWidth), of v1's second (T, B, H).
  auto Rhat = ln ? at::empty({TS, B, RWidth}, opts) : at::empty({0}, opts);
  auto RstdR = ln && save ? at::empty({T, B}, opts) : at::empty({0}, opts);
  auto RhatN = ln && v1 ? at::empty({TS, B, H}, opts) : at::empty({0}, opts);
  auto RstdN = ln && v1 && save ? at::empty({T, B}, opts) : at::empty({0}, opts);
  const auto g = ln ? ln_hh.contiguous() : at::Tensor();
  const auto b_hh = v1 ? at::zeros({3 * H}, opts) : bias_hh.contiguous();  // v1 has no b'_h
  auto r_buf = ln ? at::empty({B, RWidth}, opts) : at::Tensor();
  auto n_buf = ln && v1 ? at::empty({B, H}, opts) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "gru_forward", [&] {
    for (int64_t t = 0; t < T; ++t) {
      if (has_mask) at::mul_out(h_in, h, rmask);
      const auto& hin = has_mask ? h_in : h;
      if (ln) {
        first(r_buf, hin);
        rnnlab::ln_recurrent_rows<scalar_t>(
            B, RWidth, r_buf.data_ptr<scalar_t>(), b_hh.data_ptr<scalar_t>(), 0,
            g.data_ptr<scalar_t>(), rh.data_ptr<scalar_t>(), Rhat[save ? t : 0].data_ptr<scalar_t>(),
            save ? RstdR[t].data_ptr<scalar_t>() : nullptr);
      } else if (v1) {
        first(rh, hin);
      } else {
        first(rh, hin);
        rh.add_(bias_hh);
      }
      const scalar_t* xp = x_proj[t].data_ptr<scalar_t>();
      const scalar_t* rp = rh.data_ptr<scalar_t>();
      const scalar_t* hp = h.data_ptr<scalar_t>();
      const scalar_t* hip = hin.data_ptr<scalar_t>();
      scalar_t* ac = acts[save ? t : 0].data_ptr<scalar_t>();
      const int64_t RW = rh.size(1);
      // r and u (and, for v1, r * h, the input of the second product).
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const scalar_t *x = xp + b * 3 * H, *g = rp + b * RW;
          scalar_t *r = ac + b * 4 * H, *u = r + H;
          for (int64_t k = 0; k < H; ++k) r[k] = rnnlab::sigmoid(x[k] + g[k]);
          for (int64_t k = 0; k < H; ++k) u[k] = rnnlab::sigmoid(x[H + k] + g[H + k]);
          if (v1) {
            scalar_t* rhb = r_h.data_ptr<scalar_t>() + b * H;
            for (int64_t k = 0; k < H; ++k) rhb[k] = r[k] * hip[b * H + k];
          }
        }
      });
      if (v1 && ln) {
        (*second)(n_buf, r_h);
        rnnlab::ln_recurrent_rows<scalar_t>(
            B, H, n_buf.data_ptr<scalar_t>(), b_hh.data_ptr<scalar_t>(), 0,
            g.data_ptr<scalar_t>() + 2 * H, rhn.data_ptr<scalar_t>(),
            RhatN[save ? t : 0].data_ptr<scalar_t>(), save ? RstdN[t].data_ptr<scalar_t>() : nullptr);
      } else if (v1) {
        (*second)(rhn, r_h);
      }
      const scalar_t* np = v1 ? rhn.data_ptr<scalar_t>() : nullptr;
      scalar_t* hn = h_next.data_ptr<scalar_t>();
      scalar_t* yt = Y[t].data_ptr<scalar_t>();
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const scalar_t* x = xp + b * 3 * H + 2 * H;
          scalar_t *r = ac + b * 4 * H, *u = r + H, *n = r + 2 * H, *cand = r + 3 * H;
          const scalar_t* c = v1 ? np + b * H : rp + b * RW + 2 * H;
          for (int64_t k = 0; k < H; ++k) cand[k] = c[k];
          if (v1) {
            for (int64_t k = 0; k < H; ++k) n[k] = rnnlab::tanh(x[k] + cand[k]);
          } else {
            for (int64_t k = 0; k < H; ++k) n[k] = rnnlab::tanh(x[k] + r[k] * cand[k]);
          }
          const scalar_t* hb = hp + b * H;
          for (int64_t k = 0; k < H; ++k) hn[b * H + k] = n[k] + u[k] * (hb[k] - n[k]);
          if (has_zone) {  // zoneout: h_t = h^ + z (h_{t-1} - h^)
            const scalar_t* z = zone_c[t].data_ptr<scalar_t>() + b * H;
            for (int64_t k = 0; k < H; ++k) hn[b * H + k] += z[k] * (hb[k] - hn[b * H + k]);
          }
          std::copy(hn + b * H, hn + (b + 1) * H, yt + b * H);
        }
      });
      carry_padded(has_valid ? valid_u8[t].data_ptr<uint8_t>() : nullptr, B, H, hp, hn, yt);
      std::swap(h, h_next);
    }
  });
  if (!save) {
    acts = at::empty({0}, opts);
    Rhat = at::empty({0}, opts);
    RhatN = at::empty({0}, opts);
  }
  return {Y, h, acts, Rhat, RstdR, RhatN, RstdN};
}

std::vector<at::Tensor> gru_backward(at::Tensor dY, at::Tensor dhT, at::Tensor acts, at::Tensor Y,
                                     at::Tensor h0, at::Tensor weight_hh, at::Tensor valid,
                                     at::Tensor rmask, at::Tensor zone, at::Tensor ln_hh,
                                     at::Tensor Rhat, at::Tensor RstdR, at::Tensor RhatN,
                                     at::Tensor RstdN, bool v1) {
  dY = dY.contiguous();
  h0 = h0.contiguous();
  const int64_t T = dY.size(0), B = dY.size(1), H = dY.size(2);
  const bool has_mask = defined(rmask), has_valid = defined(valid);
  const auto valid_u8 = has_valid ? valid.to(at::kByte).contiguous() : at::Tensor();
  const auto hprev_all = previous_states(h0, Y, at::Tensor());  // unmasked h_{t-1}
  // Every row of dX and dRh is written below (padded rows with zeros): no fill needed.
  auto dX = at::empty({T, B, 3 * H}, dY.options());  // gradient of x_proj
  auto dh = dhT.contiguous().clone(), dh_next = at::empty_like(dh);
  auto direct = at::empty_like(dh), d_rh = at::empty_like(dh);
  auto rmask_c = has_mask ? rmask.contiguous() : at::Tensor();
  // d(products) R back to h: R (v1: R_ru for the first product, R_n for the second).
  const rnnlab::PackedProduct back_first(v1 ? weight_hh.narrow(0, 0, 2 * H) : weight_hh, false);
  std::optional<rnnlab::PackedProduct> back_n;
  if (v1) back_n.emplace(weight_hh.narrow(0, 2 * H, H), false);
  const bool has_zone = defined(zone);
  const auto zone_c = has_zone ? zone.contiguous() : at::Tensor();
  const bool ln = defined(ln_hh);
  const auto g = ln ? ln_hh.contiguous() : at::Tensor();
  // dProd_t, the gradient of the recurrent products (R_ru h_in, R_n (r * h_in) for v1), goes back
  // to h_{t-1} in the loop and into dR a chunk of steps at a time (weight_grad.h). dRh_t, that of
  // the recurrent terms (the normalised products with layer norm, else dProd_t itself), gives
  // b'_h's and the gains' gradients, summed step by step.
  const auto hin_all = defined(rmask) ? hprev_all * rmask : hprev_all;
  std::vector<rnnlab::ChunkedWeightGrad::Block> blocks;
  if (v1) {
    blocks = {{0, 2 * H, hin_all}, {2 * H, H, acts.narrow(2, 0, H) * hin_all}};
  } else {
    blocks = {{0, 3 * H, hin_all}};
  }
  rnnlab::ChunkedWeightGrad dR_chunks(T, B, 3 * H, blocks, dY.options());
  auto dRh_step = ln ? at::empty({B, 3 * H}, dY.options()) : at::Tensor();
  std::vector<double> dbias_acc(v1 ? 0 : 3 * H, 0.0), dg_acc(ln ? 3 * H : 0, 0.0);
  AT_DISPATCH_FLOATING_TYPES(dY.scalar_type(), "gru_backward", [&] {
    const scalar_t* mp = has_mask ? rmask_c.data_ptr<scalar_t>() : nullptr;
    for (int64_t t = T - 1; t >= 0; --t) {
      const uint8_t* vt = has_valid ? valid_u8[t].data_ptr<uint8_t>() : nullptr;
      const scalar_t* ac = acts[t].data_ptr<scalar_t>();
      const scalar_t* hp = hprev_all[t].data_ptr<scalar_t>();
      const scalar_t* dYt = dY[t].data_ptr<scalar_t>();
      const scalar_t* dhp = dh.data_ptr<scalar_t>();
      scalar_t* dx = dX[t].data_ptr<scalar_t>();
      const auto dProd_t = dR_chunks.slot(t);
      scalar_t* dpr = dProd_t.data_ptr<scalar_t>();
      scalar_t* drh = ln ? dRh_step.data_ptr<scalar_t>() : dpr;
      scalar_t* dir = direct.data_ptr<scalar_t>();
      // Phase 1: through h_t = n + u (h_prev - n) and n = tanh(.).
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          if (vt != nullptr && !vt[b]) {  // padding: no gradient reaches x_proj or R
            std::fill(dx + b * 3 * H, dx + (b + 1) * 3 * H, scalar_t(0));
            std::fill(drh + b * 3 * H, drh + (b + 1) * 3 * H, scalar_t(0));
            continue;
          }
          const scalar_t *r = ac + b * 4 * H, *u = r + H, *n = r + 2 * H, *cand = r + 3 * H;
          scalar_t *dxr = dx + b * 3 * H, *dxu = dxr + H, *dxn = dxr + 2 * H;
          scalar_t *drr = drh + b * 3 * H, *dru = drr + H, *drn = drr + 2 * H;
          // With zoneout the cell's own h^ gets (1 - z) of the gradient, h_{t-1} z of it.
          const scalar_t* z = has_zone ? zone_c[t].data_ptr<scalar_t>() + b * H : nullptr;
          for (int64_t k = 0; k < H; ++k) {
            const scalar_t g_all = dhp[b * H + k] + dYt[b * H + k];
            const scalar_t zk = z != nullptr ? z[k] : scalar_t(0);
            const scalar_t gh = g_all * (1 - zk);
            const scalar_t dnp = gh * (1 - u[k]) * (1 - n[k] * n[k]);
            const scalar_t du = gh * (hp[b * H + k] - n[k]);
            dir[b * H + k] = gh * u[k] + zk * g_all;
            dxn[k] = dnp;
            dxu[k] = dru[k] = du * u[k] * (1 - u[k]);
            if (v1) {
              drn[k] = dnp;
            } else {  // n = tanh(x_n + r * cand)
              drn[k] = dnp * r[k];
              dxr[k] = drr[k] = dnp * cand[k] * r[k] * (1 - r[k]);
            }
          }
        }
      });
      if (v1 && ln) {  // v1's candidate product through its own normalisation
        rnnlab::ln_recurrent_rows_backward<scalar_t>(
            B, H, drh + 2 * H, 3 * H, g.data_ptr<scalar_t>() + 2 * H,
            RhatN[t].data_ptr<scalar_t>(), RstdN[t].data_ptr<scalar_t>(), dpr + 2 * H, 3 * H);
      }
      if (v1) {  // Phase 2: back through R_n (r * h_in) to r and h_in.
        (*back_n)(d_rh, dProd_t.narrow(1, 2 * H, H));
        const scalar_t* dg = d_rh.data_ptr<scalar_t>();
        at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
          for (int64_t b = b0; b < b1; ++b) {
            if (vt != nullptr && !vt[b]) continue;
            const scalar_t* r = ac + b * 4 * H;
            scalar_t *dxr = dx + b * 3 * H, *drr = drh + b * 3 * H;
            for (int64_t k = 0; k < H; ++k) {
              const scalar_t m = mp != nullptr ? mp[b * H + k] : scalar_t(1);
              const scalar_t hin = hp[b * H + k] * m;
              dxr[k] = drr[k] = dg[b * H + k] * hin * r[k] * (1 - r[k]);
              dir[b * H + k] += dg[b * H + k] * r[k] * m;
            }
          }
        });
      }
      if (ln) {  // the first product (v1: its 2H gate rows) through its normalisation
        rnnlab::ln_recurrent_rows_backward<scalar_t>(
            B, v1 ? 2 * H : 3 * H, drh, 3 * H, g.data_ptr<scalar_t>(), Rhat[t].data_ptr<scalar_t>(),
            RstdR[t].data_ptr<scalar_t>(), dpr, 3 * H);
      }
      if (!v1) {  // b'_h
        for (int64_t b = 0; b < B; ++b)
          for (int64_t k = 0; k < 3 * H; ++k) dbias_acc[k] += drh[b * 3 * H + k];
      }
      if (ln && v1) {
        rnnlab::column_dot_add<scalar_t>(B, 2 * H, drh, 3 * H, Rhat[t].data_ptr<scalar_t>(),
                                         2 * H, dg_acc.data());
        rnnlab::column_dot_add<scalar_t>(B, H, drh + 2 * H, 3 * H,
                                         RhatN[t].data_ptr<scalar_t>(), H, dg_acc.data() + 2 * H);
      } else if (ln) {
        rnnlab::column_dot_add<scalar_t>(B, 3 * H, drh, 3 * H, Rhat[t].data_ptr<scalar_t>(),
                                         3 * H, dg_acc.data());
      }
      // The recurrent product back to h_{t-1}, plus the direct path.
      back_first(dh_next, v1 ? dProd_t.narrow(1, 0, 2 * H) : dProd_t);
      dR_chunks.done(t);
      if (has_mask) dh_next.mul_(rmask_c);
      dh_next.add_(direct);
      pass_padded(vt, B, H, dhp, dh_next.data_ptr<scalar_t>());
      std::swap(dh, dh_next);
    }
  });
  const auto as_tensor = [&](const std::vector<double>& acc) {
    return at::tensor(acc, dY.options().dtype(at::kDouble)).to(dY.scalar_type());
  };
  const auto dR = dR_chunks.result();
  const auto dbias_hh = v1 ? at::empty({0}, dY.options()) : as_tensor(dbias_acc);
  const auto dg = ln ? as_tensor(dg_acc) : at::empty({0}, dY.options());
  return {dX, dR, dbias_hh, dh, dg};
}

std::vector<at::Tensor> tanh_forward(at::Tensor x_proj, at::Tensor weight_hh, at::Tensor h0,
                                     at::Tensor valid, at::Tensor rmask, at::Tensor zone,
                                     at::Tensor ln_hh, bool save) {
  x_proj = x_proj.contiguous();
  const int64_t T = x_proj.size(0), B = x_proj.size(1), H = weight_hh.size(1);
  const bool has_mask = defined(rmask), has_valid = defined(valid);
  const auto valid_u8 = has_valid ? valid.to(at::kByte).contiguous() : at::Tensor();
  auto Y = at::empty({T, B, H}, x_proj.options());
  auto h = h0.contiguous().clone(), h_next = at::empty_like(h);
  auto h_in = has_mask ? at::empty_like(h) : at::Tensor();
  const rnnlab::PackedProduct recurrent(weight_hh, true);  // h_in R^T
  const bool has_zone = defined(zone);
  const auto zone_c = has_zone ? zone.contiguous() : at::Tensor();
  // With zoneout the backward needs the cell's own y^ = tanh(.), not the zoned output.
  auto Yhat = has_zone ? at::empty({T, B, H}, x_proj.options()) : at::empty({0}, x_proj.options());
  const bool ln = defined(ln_hh);
  auto Rhat = ln ? at::empty({save ? T : 1, B, H}, x_proj.options()) : at::empty({0}, x_proj.options());
  auto RstdR = ln && save ? at::empty({T, B}, x_proj.options()) : at::empty({0}, x_proj.options());
  const auto g = ln ? ln_hh.contiguous() : at::Tensor();
  auto r_buf = ln ? at::empty({B, H}, x_proj.options()) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "tanh_forward", [&] {
    for (int64_t t = 0; t < T; ++t) {
      if (has_mask) at::mul_out(h_in, h, rmask);
      if (ln) {
        recurrent(r_buf, has_mask ? h_in : h);
        rnnlab::ln_recurrent_rows<scalar_t>(
            B, H, r_buf.data_ptr<scalar_t>(), x_proj[t].data_ptr<scalar_t>(), H,
            g.data_ptr<scalar_t>(), h_next.data_ptr<scalar_t>(),
            Rhat[save ? t : 0].data_ptr<scalar_t>(), save ? RstdR[t].data_ptr<scalar_t>() : nullptr);
      } else {
        recurrent(h_next, has_mask ? h_in : h);
      }
      scalar_t* hn = h_next.data_ptr<scalar_t>();
      const int64_t n = B * H;
      // x_proj is added here (layer norm's rows already hold it).
      const scalar_t* xt = ln ? nullptr : x_proj[t].data_ptr<scalar_t>();
      at::parallel_for(0, n, 4096, [&](int64_t k0, int64_t k1) {
        if (xt != nullptr) {
          for (int64_t k = k0; k < k1; ++k) hn[k] = rnnlab::tanh(hn[k] + xt[k]);
        } else {
          for (int64_t k = k0; k < k1; ++k) hn[k] = rnnlab::tanh(hn[k]);
        }
      });
      if (has_zone) {
        std::copy(hn, hn + n, Yhat[t].data_ptr<scalar_t>());
        const scalar_t *z = zone_c[t].data_ptr<scalar_t>(), *hp = h.data_ptr<scalar_t>();
        for (int64_t k = 0; k < n; ++k) hn[k] += z[k] * (hp[k] - hn[k]);
      }
      scalar_t* yt = Y[t].data_ptr<scalar_t>();
      std::copy(hn, hn + n, yt);
      carry_padded(has_valid ? valid_u8[t].data_ptr<uint8_t>() : nullptr, B, H,
                   h.data_ptr<scalar_t>(), hn, yt);
      std::swap(h, h_next);
    }
  });
  if (!save) Rhat = at::empty({0}, x_proj.options());
  return {Y, h, Yhat, Rhat, RstdR};
}

std::vector<at::Tensor> tanh_backward(at::Tensor dY, at::Tensor dhT, at::Tensor Y, at::Tensor h0,
                                      at::Tensor weight_hh, at::Tensor valid, at::Tensor rmask,
                                      at::Tensor zone, at::Tensor Yhat, at::Tensor ln_hh,
                                      at::Tensor Rhat, at::Tensor RstdR) {
  dY = dY.contiguous();
  const int64_t T = dY.size(0), B = dY.size(1), H = dY.size(2);
  const bool has_mask = defined(rmask), has_valid = defined(valid);
  const auto valid_u8 = has_valid ? valid.to(at::kByte).contiguous() : at::Tensor();
  auto dPre = at::empty({T, B, H}, dY.options());  // every row written below
  auto dh = dhT.contiguous().clone(), dh_next = at::empty_like(dh);
  const bool has_zone = defined(zone);
  const auto zone_c = has_zone ? zone.contiguous() : at::Tensor();
  const bool ln = defined(ln_hh);
  const auto g = ln ? ln_hh.contiguous() : at::Tensor();
  auto dProd = ln ? at::empty({T, B, H}, dY.options()) : dPre;  // d(R h) before the normalisation
  const rnnlab::PackedProduct back(weight_hh, false);  // d(R h) R
  AT_DISPATCH_FLOATING_TYPES(dY.scalar_type(), "tanh_backward", [&] {
    for (int64_t t = T - 1; t >= 0; --t) {
      const uint8_t* vt = has_valid ? valid_u8[t].data_ptr<uint8_t>() : nullptr;
      const scalar_t* y = (has_zone ? Yhat : Y)[t].data_ptr<scalar_t>();  // y^ = tanh(.)
      const scalar_t* z = has_zone ? zone_c[t].data_ptr<scalar_t>() : nullptr;
      const scalar_t* dYt = dY[t].data_ptr<scalar_t>();
      const scalar_t* dhp = dh.data_ptr<scalar_t>();
      scalar_t* dp = dPre[t].data_ptr<scalar_t>();
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          if (vt != nullptr && !vt[b]) {
            std::fill(dp + b * H, dp + (b + 1) * H, scalar_t(0));
            continue;
          }
          for (int64_t k = b * H; k < (b + 1) * H; ++k)
            dp[k] = (dhp[k] + dYt[k]) * (z != nullptr ? 1 - z[k] : scalar_t(1)) * (1 - y[k] * y[k]);
        }
      });
      if (ln) {
        rnnlab::ln_recurrent_rows_backward<scalar_t>(
            B, H, dp, H, g.data_ptr<scalar_t>(), Rhat[t].data_ptr<scalar_t>(),
            RstdR[t].data_ptr<scalar_t>(), dProd[t].data_ptr<scalar_t>(), H);
      }
      back(dh_next, dProd[t]);
      if (has_mask) dh_next.mul_(rmask);
      if (has_zone) {  // the zoned-out part of y_t is y_{t-1}
        scalar_t* dn = dh_next.data_ptr<scalar_t>();
        for (int64_t k = 0; k < B * H; ++k) dn[k] += z[k] * (dhp[k] + dYt[k]);
      }
      pass_padded(vt, B, H, dhp, dh_next.data_ptr<scalar_t>());
      std::swap(dh, dh_next);
    }
  });
  const auto hin_all = previous_states(h0, Y, rmask);
  auto dR = at::mm(dProd.reshape({T * B, H}).t(), hin_all.reshape({T * B, H}));
  auto dg = ln ? rnnlab::column_dot(dPre, Rhat) : at::empty({0}, dY.options());
  return {dPre, dR, dh, dg};
}
