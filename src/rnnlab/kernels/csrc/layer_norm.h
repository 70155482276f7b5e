// Layer normalisation (Ba et al. 2016) of rows, forward and backward, for the fused kernels.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace rnnlab {

constexpr double kLayerNormEps = 1e-5;  // torch.nn.functional.layer_norm's default

// xhat = (x - mean) / sqrt(var + eps) over n values (biased variance, two passes in double);
// returns 1 / sqrt(var + eps).
template <typename scalar_t>
inline scalar_t normalise_row(const scalar_t* x, scalar_t* xhat, int64_t n) {
  double sum = 0;
  for (int64_t k = 0; k < n; ++k) sum += x[k];
  const double mean = sum / n;
  double sq = 0;
  for (int64_t k = 0; k < n; ++k) sq += (x[k] - mean) * (x[k] - mean);
  const scalar_t rstd = scalar_t(1.0 / std::sqrt(sq / n + kLayerNormEps));
  const scalar_t m = scalar_t(mean);
  for (int64_t k = 0; k < n; ++k) xhat[k] = (x[k] - m) * rstd;
  return rstd;
}

// The gradient through xhat = LN(x) for one row: dx = rstd (dxhat - mean(dxhat)
// - xhat mean(dxhat xhat)).
template <typename scalar_t>
inline void normalise_row_backward(const scalar_t* dxhat, const scalar_t* xhat, scalar_t rstd,
                                   scalar_t* dx, int64_t n) {
  double s1 = 0, s2 = 0;
  for (int64_t k = 0; k < n; ++k) {
    s1 += dxhat[k];
    s2 += double(dxhat[k]) * xhat[k];
  }
  const scalar_t m1 = scalar_t(s1 / n), m2 = scalar_t(s2 / n);
  for (int64_t k = 0; k < n; ++k) dx[k] = rstd * (dxhat[k] - m1 - xhat[k] * m2);
}

// Layer norm of the recurrent product, row by row: pre = xp + g * LN(r), where xp advances by
// xp_stride per row (GH for a per-row input projection, 0 for a bias shared by the rows); the
// normalised rows and 1/sigma go to rhat and rstd (rhat may be scratch, rstd nullptr).
template <typename scalar_t>
void ln_recurrent_rows(int64_t B, int64_t GH, const scalar_t* r, const scalar_t* xp,
                       int64_t xp_stride, const scalar_t* g, scalar_t* pre, scalar_t* rhat,
                       scalar_t* rstd) {
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      scalar_t* rh = rhat + b * GH;
      const scalar_t s = normalise_row(r + b * GH, rh, GH);
      if (rstd != nullptr) rstd[b] = s;
      const scalar_t* x = xp + b * xp_stride;
      scalar_t* p = pre + b * GH;
      for (int64_t k = 0; k < GH; ++k) p[k] = x[k] + g[k] * rh[k];
    }
  });
}

// The gradient of r from that of pre: dr = LN'(dpre * g), row by row (rows of zeros stay zero).
// dpre and dr advance by their strides per row (a block of a wider row); rhat is (B, GH).
template <typename scalar_t>
void ln_recurrent_rows_backward(int64_t B, int64_t GH, const scalar_t* dpre, int64_t dpre_stride,
                                const scalar_t* g, const scalar_t* rhat, const scalar_t* rstd,
                                scalar_t* dr, int64_t dr_stride) {
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<scalar_t> dxhat(GH);
    for (int64_t b = b0; b < b1; ++b) {
      const scalar_t* d = dpre + b * dpre_stride;
      for (int64_t k = 0; k < GH; ++k) dxhat[k] = d[k] * g[k];
      normalise_row_backward(dxhat.data(), rhat + b * GH, rstd[b], dr + b * dr_stride, GH);
    }
  });
}

// acc[k] += sum over rows of a * b in column k: the gains' gradients without the (rows, n)
// product a tensor expression would allocate. a is (rows, n) inside rows of a_stride, b likewise.
template <typename scalar_t>
void column_dot_add(int64_t rows, int64_t n, const scalar_t* a, int64_t a_stride,
                    const scalar_t* b, int64_t b_stride, double* acc) {
  at::parallel_for(0, n, 64, [&](int64_t k0, int64_t k1) {
    for (int64_t r = 0; r < rows; ++r) {
      const scalar_t* ar = a + r * a_stride;
      const scalar_t* br = b + r * b_stride;
      for (int64_t k = k0; k < k1; ++k) acc[k] += double(ar[k]) * br[k];
    }
  });
}

// at::Tensor form: a and b are (T, B, n) views whose rows are contiguous (a narrow of a wider
// last dimension included); the result is (n).
inline at::Tensor column_dot(const at::Tensor& a, const at::Tensor& b) {
  const int64_t n = a.size(2), rows = a.size(0) * a.size(1);
  TORCH_CHECK(a.stride(2) == 1 && b.stride(2) == 1 && a.stride(0) == a.size(1) * a.stride(1) &&
                  b.stride(0) == b.size(1) * b.stride(1),
              "column_dot: rows must be evenly strided");
  auto acc = at::zeros({n}, a.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "column_dot", [&] {
    column_dot_add<scalar_t>(rows, n, a.data_ptr<scalar_t>(), a.stride(1),
                             b.data_ptr<scalar_t>(), b.stride(1), acc.data_ptr<double>());
  });
  return acc.to(a.scalar_type());
}

}  // namespace rnnlab
