// The recurrent product of a time loop, C = A M with M fixed for the whole loop, where M is a
// layer's recurrent weight R^T (forward) or R (backward).
//
// MKL repacks M on every call and splits a small product across the cores with a barrier of its
// own; at (32 x 256)(256 x 1024) that runs at about half the machine's peak. Here M is packed once
// per loop into panels of 32 columns (K x 32 floats each, the last one zero-padded) and every
// product gives each thread the same run of panels, so a thread's share of M stays in its core's
// L2 from step to step; an 8 x 32 AVX-512 register tile accumulates over K. Measured on this
// project's 2-core Zen 4 VM: 100 products (32 x 256)(256 x 1024) in 8.2 ms against MKL's 16.3.
//
// float32 with AVX-512 only; everything else (float64, other CPUs) goes through at::mm_out, which
// computes the same product.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace rnnlab {

class PackedProduct {
 public:
  // M = W^T (transpose: W is (N, K), as R for the forward's y R^T) or M = W ((K, N), as R for
  // the backward's d R).
  PackedProduct(const at::Tensor& W, bool transpose) : W_(W), transpose_(transpose) {
    K_ = transpose ? W.size(1) : W.size(0);
    N_ = transpose ? W.size(0) : W.size(1);
#if defined(__AVX512F__)
    if (W.scalar_type() != at::kFloat || std::getenv("RNNLAB_NO_PACKED_PRODUCT") != nullptr) return;
    const auto Wc = W.contiguous();
    panels_ = (N_ + 31) / 32;
    packed_ = at::zeros({panels_, K_, 32}, W.options());
    const float* w = Wc.data_ptr<float>();
    float* p = packed_.data_ptr<float>();
    at::parallel_for(0, panels_, 1, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t width = std::min<int64_t>(32, N_ - q * 32);
        for (int64_t k = 0; k < K_; ++k) {
          float* row = p + (q * K_ + k) * 32;
          for (int64_t j = 0; j < width; ++j) {
            const int64_t n = q * 32 + j;
            row[j] = transpose ? w[n * K_ + k] : w[k * N_ + n];
          }
        }
      }
    });
#endif
  }

  // out (M, N) = A (M, K) times the packed matrix; out contiguous, A's rows contiguous (A may be
  // a block of columns of a wider matrix).
  void operator()(at::Tensor& out, const at::Tensor& A) const {
#if defined(__AVX512F__)
    if (packed_.defined() && A.scalar_type() == at::kFloat && A.stride(1) == 1 &&
        out.is_contiguous()) {
      const int64_t M = A.size(0), lda = A.stride(0);
      const float* a = A.data_ptr<float>();
      const float* p = packed_.data_ptr<float>();
      float* c = out.data_ptr<float>();
      at::parallel_for(0, panels_, 1, [&](int64_t q0, int64_t q1) {
        for (int64_t q = q0; q < q1; ++q) {
          const int64_t width = std::min<int64_t>(32, N_ - q * 32);
          const __mmask16 m0 = mask(width), m1 = mask(width - 16);
          for (int64_t m = 0; m < M; m += 8) {
            tile(a + m * lda, lda, p + q * K_ * 32, c + m * N_ + q * 32,
                 int(std::min<int64_t>(8, M - m)), m0, m1);
          }
        }
      });
      return;
    }
#endif
    at::mm_out(out, A, transpose_ ? W_.t() : W_);
  }

 private:
#if defined(__AVX512F__)
  static __mmask16 mask(int64_t n) {
    return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
  }

  // rows (1..8) rows of C, one panel: C[r, 0:32] = sum_k A[r, k] P[k, 0:32].
  void tile(const float* A, int64_t lda, const float* P, float* C, int rows, __mmask16 m0,
            __mmask16 m1) const {
    switch (rows) {
      case 8: return tile_rows<8>(A, lda, P, C, m0, m1);
      case 7: return tile_rows<7>(A, lda, P, C, m0, m1);
      case 6: return tile_rows<6>(A, lda, P, C, m0, m1);
      case 5: return tile_rows<5>(A, lda, P, C, m0, m1);
      case 4: return tile_rows<4>(A, lda, P, C, m0, m1);
      case 3: return tile_rows<3>(A, lda, P, C, m0, m1);
      case 2: return tile_rows<2>(A, lda, P, C, m0, m1);
      default: return tile_rows<1>(A, lda, P, C, m0, m1);
    }
  }

  template <int R>
  void tile_rows(const float* A, int64_t lda, const float* P, float* C, __mmask16 m0,
                 __mmask16 m1) const {
    __m512 c0[R], c1[R];
    for (int r = 0; r < R; ++r) c0[r] = c1[r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K_; ++k) {
      const __m512 b0 = _mm512_loadu_ps(P + k * 32), b1 = _mm512_loadu_ps(P + k * 32 + 16);
      for (int r = 0; r < R; ++r) {
        const __m512 a = _mm512_set1_ps(A[r * lda + k]);
        c0[r] = _mm512_fmadd_ps(a, b0, c0[r]);
        c1[r] = _mm512_fmadd_ps(a, b1, c1[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      _mm512_mask_storeu_ps(C + r * N_, m0, c0[r]);
      _mm512_mask_storeu_ps(C + r * N_ + 16, m1, c1[r]);
    }
  }
#endif

  at::Tensor W_;
  bool transpose_;
  int64_t K_ = 0, N_ = 0, panels_ = 0;
  at::Tensor packed_;
};

}  // namespace rnnlab
