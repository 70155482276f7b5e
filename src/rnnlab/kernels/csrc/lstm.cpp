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

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace {

template <typename T>
inline T sigm(T x) { return T(1) / (T(1) + std::exp(-x)); }

struct Layout {
  int64_t off_i, off_f, off_z, off_o, p_i, p_f, p_o;
  bool coupled, g_act, h_act, fgr;
};

Layout make_layout(const std::vector<int64_t>& l, const std::vector<int64_t>& f) {
  TORCH_CHECK(l.size() == 7 && f.size() == 4, "lstm kernel: bad layout");
  return {l[0], l[1], l[2], l[3], l[4], l[5], l[6], f[0] != 0, f[1] != 0, f[2] != 0, f[3] != 0};
}

inline bool defined(const at::Tensor& t) { return t.defined() && t.numel() > 0; }

template <typename scalar_t>
void forward_step(const Layout& L, int64_t B, int64_t H, int64_t GH, const scalar_t* pre,
                  const scalar_t* gg, const scalar_t* P, const uint8_t* valid,
                  const scalar_t* y_prev, const scalar_t* c_prev, const scalar_t* a_prev,
                  scalar_t* y_new, scalar_t* c_new, scalar_t* a_new, scalar_t* y_out,
                  scalar_t* acts, scalar_t* c_save) {
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const scalar_t* pr = pre + b * GH;
      const bool v = valid == nullptr || valid[b];
      for (int64_t h = 0; h < H; ++h) {
        const int64_t bh = b * H + h;
        const scalar_t cp = c_prev[bh];
        const scalar_t zbar = pr[L.off_z * H + h];
        const scalar_t z = L.g_act ? std::tanh(zbar) : zbar;
        scalar_t i = 1, f = 1, o = 1;
        if (L.off_i >= 0) {
          scalar_t s = pr[L.off_i * H + h];
          if (L.p_i >= 0) s += P[L.p_i * H + h] * cp;
          if (L.fgr) s += gg[b * 3 * H + h];
          i = sigm(s);
        }
        if (L.coupled) {
          f = scalar_t(1) - i;
        } else if (L.off_f >= 0) {
          scalar_t s = pr[L.off_f * H + h];
          if (L.p_f >= 0) s += P[L.p_f * H + h] * cp;
          if (L.fgr) s += gg[b * 3 * H + H + h];
          f = sigm(s);
        }
        const scalar_t c = z * i + cp * f;
        if (L.off_o >= 0) {
          scalar_t s = pr[L.off_o * H + h];
          if (L.p_o >= 0) s += P[L.p_o * H + h] * c;
          if (L.fgr) s += gg[b * 3 * H + 2 * H + h];
          o = sigm(s);
        }
        const scalar_t hc = L.h_act ? std::tanh(c) : c;
        const scalar_t y = hc * o;
        if (v) {
          y_new[bh] = y;
          c_new[bh] = c;
          y_out[bh] = y;
        } else {
          y_new[bh] = y_prev[bh];
          c_new[bh] = cp;
          y_out[bh] = 0;
        }
        if (a_new != nullptr) {
          const int64_t ba = b * 3 * H + h;
          a_new[ba] = v ? i : a_prev[ba];
          a_new[ba + H] = v ? f : a_prev[ba + H];
          a_new[ba + 2 * H] = v ? o : a_prev[ba + 2 * H];
        }
        if (acts != nullptr) {
          scalar_t* ac = acts + b * 4 * H;
          ac[h] = i;
          ac[H + h] = f;
          ac[2 * H + h] = z;
          ac[3 * H + h] = o;
          c_save[bh] = c;
        }
      }
    }
  });
}

}  // namespace

std::vector<at::Tensor> lstm_forward(at::Tensor x_proj, at::Tensor weight_hh, at::Tensor peephole,
                                     at::Tensor weight_gg, at::Tensor y0, at::Tensor c0,
                                     at::Tensor a0, at::Tensor valid, at::Tensor rmask,
                                     std::vector<int64_t> layout, std::vector<int64_t> flags,
                                     bool save) {
  const Layout L = make_layout(layout, flags);
  x_proj = x_proj.contiguous();
  const int64_t T = x_proj.size(0), B = x_proj.size(1), GH = x_proj.size(2);
  const int64_t H = weight_hh.size(1);
  const auto R_t = weight_hh.t();
  const bool has_mask = defined(rmask), has_valid = defined(valid);
  auto Y = at::empty({T, B, H}, x_proj.options());
  auto acts = save ? at::empty({T, B, 4 * H}, x_proj.options()) : at::Tensor();
  auto C = save ? at::empty({T, B, H}, x_proj.options()) : at::Tensor();
  auto y = y0.contiguous().clone(), c = c0.contiguous().clone();
  auto y_next = at::empty_like(y), c_next = at::empty_like(c);
  at::Tensor a, a_next, Wgg_t;
  if (L.fgr) {
    a = a0.contiguous().clone();
    a_next = at::empty_like(a);
    Wgg_t = weight_gg.t();
  }
  const auto valid_u8 = has_valid ? valid.to(at::kByte).contiguous() : at::Tensor();
  const auto P = defined(peephole) ? peephole.contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "lstm_forward", [&] {
    for (int64_t t = 0; t < T; ++t) {
      const auto y_in = has_mask ? y * rmask : y;
      const auto pre = at::addmm(x_proj[t], y_in, R_t);
      at::Tensor gg;
      if (L.fgr) gg = at::mm(a, Wgg_t);
      forward_step<scalar_t>(
          L, B, H, GH, pre.data_ptr<scalar_t>(), L.fgr ? gg.data_ptr<scalar_t>() : nullptr,
          P.defined() ? P.data_ptr<scalar_t>() : nullptr,
          has_valid ? valid_u8[t].data_ptr<uint8_t>() : nullptr, y.data_ptr<scalar_t>(),
          c.data_ptr<scalar_t>(), L.fgr ? a.data_ptr<scalar_t>() : nullptr,
          y_next.data_ptr<scalar_t>(), c_next.data_ptr<scalar_t>(),
          L.fgr ? a_next.data_ptr<scalar_t>() : nullptr, Y[t].data_ptr<scalar_t>(),
          save ? acts[t].data_ptr<scalar_t>() : nullptr,
          save ? C[t].data_ptr<scalar_t>() : nullptr);
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
  return {Y, y, c, a, acts, C};
}

std::vector<at::Tensor> lstm_backward(at::Tensor dY, at::Tensor dyT, at::Tensor dcT,
                                      at::Tensor daT, at::Tensor acts, at::Tensor C,
                                      at::Tensor Y, at::Tensor y0, at::Tensor c0, at::Tensor a0,
                                      at::Tensor weight_hh, at::Tensor peephole,
                                      at::Tensor weight_gg, at::Tensor valid, at::Tensor rmask,
                                      std::vector<int64_t> layout, std::vector<int64_t> flags) {
  const Layout L = make_layout(layout, flags);
  dY = dY.contiguous();
  c0 = c0.contiguous();  // pointers into it are taken in the loop
  const int64_t T = dY.size(0), B = dY.size(1), H = dY.size(2);
  const int64_t GH = weight_hh.size(0);
  const bool has_mask = defined(rmask), has_valid = defined(valid);
  const auto valid_u8 = has_valid ? valid.to(at::kByte).contiguous() : at::Tensor();
  const auto P = defined(peephole) ? peephole.contiguous() : at::Tensor();
  auto dPre = at::zeros({T, B, GH}, dY.options());
  auto dy = dyT.contiguous().clone(), dc = dcT.contiguous().clone();
  at::Tensor da;
  if (L.fgr) da = daT.contiguous().clone();
  auto dc_prev = at::empty_like(dc);

  AT_DISPATCH_FLOATING_TYPES(dY.scalar_type(), "lstm_backward", [&] {
    const scalar_t* Pp = P.defined() ? P.data_ptr<scalar_t>() : nullptr;
    for (int64_t t = T - 1; t >= 0; --t) {
      const scalar_t* ac = acts[t].data_ptr<scalar_t>();
      const scalar_t* ct = C[t].data_ptr<scalar_t>();
      const scalar_t* cprev = (t > 0 ? C[t - 1] : c0).data_ptr<scalar_t>();
      const scalar_t* dYt = dY[t].data_ptr<scalar_t>();
      const uint8_t* vt = has_valid ? valid_u8[t].data_ptr<uint8_t>() : nullptr;
      scalar_t* dpre = dPre[t].data_ptr<scalar_t>();
      const scalar_t* dyp = dy.data_ptr<scalar_t>();
      const scalar_t* dcp = dc.data_ptr<scalar_t>();
      const scalar_t* dap = L.fgr ? da.data_ptr<scalar_t>() : nullptr;
      scalar_t* dcn = dc_prev.data_ptr<scalar_t>();
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          if (vt != nullptr && !vt[b]) {  // padding: the state passes through unchanged
            for (int64_t h = 0; h < H; ++h) dcn[b * H + h] = dcp[b * H + h];
            continue;
          }
          const scalar_t* a = ac + b * 4 * H;
          scalar_t* dp = dpre + b * GH;
          for (int64_t h = 0; h < H; ++h) {
            const int64_t bh = b * H + h;
            const scalar_t i = a[h], f = a[H + h], z = a[2 * H + h], o = a[3 * H + h];
            const scalar_t c = ct[bh], cp = cprev[bh];
            const scalar_t hc = L.h_act ? std::tanh(c) : c;
            const scalar_t gy = dyp[bh] + dYt[bh];
            scalar_t go = gy * hc;
            if (L.fgr) go += dap[b * 3 * H + 2 * H + h];
            const scalar_t dpo = L.off_o >= 0 ? go * o * (1 - o) : scalar_t(0);
            scalar_t gc = dcp[bh] + gy * o * (L.h_act ? 1 - hc * hc : scalar_t(1));
            if (L.p_o >= 0) gc += dpo * Pp[L.p_o * H + h];
            scalar_t gi = gc * z, gf = gc * cp;
            if (L.fgr) {
              gi += dap[b * 3 * H + h];
              gf += dap[b * 3 * H + H + h];
            }
            if (L.coupled) gi -= gf;  // f = 1 - i
            const scalar_t dpi = L.off_i >= 0 ? gi * i * (1 - i) : scalar_t(0);
            const scalar_t dpf = (L.off_f >= 0 && !L.coupled) ? gf * f * (1 - f) : scalar_t(0);
            const scalar_t dpz = gc * i * (L.g_act ? 1 - z * z : scalar_t(1));
            scalar_t dcprev = gc * f;
            if (L.p_i >= 0) dcprev += dpi * Pp[L.p_i * H + h];
            if (L.p_f >= 0) dcprev += dpf * Pp[L.p_f * H + h];
            dcn[bh] = dcprev;
            if (L.off_i >= 0) dp[L.off_i * H + h] = dpi;
            if (L.off_f >= 0) dp[L.off_f * H + h] = dpf;
            dp[L.off_z * H + h] = dpz;
            if (L.off_o >= 0) dp[L.off_o * H + h] = dpo;
          }
        }
      });
      // Only the recurrent products stay in the loop.
      auto dy_prev = at::mm(dPre[t], weight_hh);
      if (has_mask) dy_prev.mul_(rmask);
      at::Tensor da_prev;
      if (L.fgr) {  // FGR has all four blocks i, f, z, o: take the rows of i, f and o
        const auto d_ifo = at::cat({dPre[t].narrow(1, 0, 2 * H), dPre[t].narrow(1, 3 * H, H)}, 1);
        da_prev = at::mm(d_ifo, weight_gg);
      }
      if (has_valid) {
        const auto pad = (valid_u8[t] == 0).unsqueeze(1);
        dy_prev = at::where(pad, dy, dy_prev);
        if (L.fgr) da_prev = at::where(pad, da, da_prev);
      }
      dy = dy_prev;
      std::swap(dc, dc_prev);
      if (L.fgr) da = da_prev;
    }
  });

  // Weight gradients as single large products over all steps.
  auto y_prev = at::cat({y0.unsqueeze(0), Y.narrow(0, 0, T - 1)}, 0);  // (T, B, H)
  if (has_mask) y_prev = y_prev * rmask;
  auto dPre2 = dPre.view({T * B, GH});
  auto dR = at::mm(dPre2.t(), y_prev.reshape({T * B, H}));
  at::Tensor dP = at::empty({0}, dY.options());
  if (P.defined()) {
    auto c_prev = at::cat({c0.unsqueeze(0), C.narrow(0, 0, T - 1)}, 0);
    const int64_t offs[3] = {L.off_i, L.off_f, L.off_o};
    const int64_t prow[3] = {L.p_i, L.p_f, L.p_o};
    std::vector<std::pair<int64_t, at::Tensor>> found;
    for (int k = 0; k < 3; ++k) {
      if (prow[k] < 0) continue;
      const auto& cc = k == 2 ? C : c_prev;  // the output gate's peephole sees c_t
      found.emplace_back(prow[k], (dPre.narrow(2, offs[k] * H, H) * cc).sum({0, 1}));
    }
    dP = at::zeros_like(P);
    for (auto& [row, g] : found) dP[row].copy_(g);
  }
  at::Tensor dWgg = at::empty({0}, dY.options());
  if (L.fgr) {
    auto a_all = at::cat({acts.narrow(2, 0, 2 * H), acts.narrow(2, 3 * H, H)}, 2);  // (T,B,3H)
    auto a_prev = at::cat({a0.unsqueeze(0), a_all.narrow(0, 0, T - 1)}, 0);
    auto dPre_ifo = at::cat({dPre.narrow(2, 0, 2 * H), dPre.narrow(2, 3 * H, H)}, 2);
    dWgg = at::mm(dPre_ifo.reshape({T * B, 3 * H}).t(), a_prev.reshape({T * B, 3 * H}));
  } else {
    da = at::empty({0}, dY.options());
  }
  return {dPre, dR, dP, dWgg, dy, dc, da};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lstm_forward", &lstm_forward, "fused LSTM-family forward (CPU)");
  m.def("lstm_backward", &lstm_backward, "fused LSTM-family backward (CPU)");
}
