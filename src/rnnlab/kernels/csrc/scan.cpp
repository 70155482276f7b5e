// The linear recurrence h_t = a_t * h_{t-1} + b_t of the parallel-scan cells (minGRU, minLSTM),
// computed exactly and sequentially: on a CPU this O(T B H) loop is the fast path, where the
// log-space parallel scan pays for exp, log and logcumsumexp.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <vector>

std::vector<at::Tensor> linear_scan_forward(at::Tensor a, at::Tensor b, at::Tensor h0) {
  a = a.contiguous();
  b = b.contiguous();
  const int64_t T = a.size(0), N = a.numel() / std::max<int64_t>(T, 1);
  auto H = at::empty_like(a);
  auto h = h0.contiguous().clone();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "linear_scan_forward", [&] {
    const scalar_t *ap = a.data_ptr<scalar_t>(), *bp = b.data_ptr<scalar_t>();
    scalar_t *hp = h.data_ptr<scalar_t>(), *out = H.data_ptr<scalar_t>();
    at::parallel_for(0, N, 1024, [&](int64_t n0, int64_t n1) {
      for (int64_t t = 0; t < T; ++t) {
        const int64_t o = t * N;
        for (int64_t n = n0; n < n1; ++n) {
          hp[n] = ap[o + n] * hp[n] + bp[o + n];
          out[o + n] = hp[n];
        }
      }
    });
  });
  return {H, h};
}

// Given dH (T, ...) and dhT, returns da, db and dh0.
std::vector<at::Tensor> linear_scan_backward(at::Tensor dH, at::Tensor dhT, at::Tensor a,
                                             at::Tensor H, at::Tensor h0) {
  dH = dH.contiguous();
  a = a.contiguous();
  const int64_t T = a.size(0), N = a.numel() / std::max<int64_t>(T, 1);
  auto da = at::empty_like(a), db = at::empty_like(a);
  auto g = dhT.contiguous().clone();
  h0 = h0.contiguous();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "linear_scan_backward", [&] {
    const scalar_t *ap = a.data_ptr<scalar_t>(), *dp = dH.data_ptr<scalar_t>();
    const scalar_t *hp = H.data_ptr<scalar_t>(), *h0p = h0.data_ptr<scalar_t>();
    scalar_t *gp = g.data_ptr<scalar_t>(), *dap = da.data_ptr<scalar_t>();
    scalar_t* dbp = db.data_ptr<scalar_t>();
    at::parallel_for(0, N, 1024, [&](int64_t n0, int64_t n1) {
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t o = t * N;
        const scalar_t* prev = t > 0 ? hp + (t - 1) * N : h0p;
        for (int64_t n = n0; n < n1; ++n) {
          const scalar_t gt = gp[n] + dp[o + n];
          dbp[o + n] = gt;
          dap[o + n] = gt * prev[n];
          gp[n] = gt * ap[o + n];
        }
      }
    });
  });
  return {da, db, g};
}
