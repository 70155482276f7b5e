// The recurrent product of a time loop, C = A M with M fixed for the whole loop, where M is a
// layer's recurrent weight R^T (forward) or R (backward).
//
// MKL repacks M on every call and splits a small product across the cores with a barrier of its
// own; at (32 x 256)(256 x 1024) that runs at about half the machine's peak. Here M is packed once
// per loop into panels of kPanel columns (K x kPanel floats each, the last one zero-padded) and
// every product gives each thread the same run of panels, so a thread's share of M stays in its
// core's L2 from step to step; a register tile of rows x kPanel accumulates over K:
//
// - AVX-512: panels of 32 columns, tiles of 8 x 32 (16 zmm accumulators). Measured on a 2-core
//   Zen 4 VM: 100 products (32 x 256)(256 x 1024) in 8.2 ms against MKL's 16.3.
// - AVX2 with FMA (no AVX-512): panels of 16 columns, tiles of 6 x 16 (12 ymm accumulators, two
//   for the panel's row and one broadcast: 15 of the 16 registers).
//
// float32 only; everything else (float64, other CPUs) goes through at::mm_out, which computes the
// same product, as does RNNLAB_NO_PACKED_PRODUCT=1 (read when a loop packs its weight).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#if defined(__AVX512F__)
#define RNNLAB_PACKED 1
#include <immintrin.h>
#elif defined(__AVX2__) && defined(__FMA__)
#define RNNLAB_PACKED 1
#include <immintrin.h>
#endif

namespace rnnlab {

class PackedProduct {
 public:
#if defined(__AVX512F__)
  static constexpr int64_t kPanel = 32, kRows = 8;
#else
  static constexpr int64_t kPanel = 16, kRows = 6;
#endif

  // M = W^T (transpose: W is (N, K), as R for the forward's y R^T) or M = W ((K, N), as R for
  // the backward's d R).
  PackedProduct(const at::Tensor& W, bool transpose) : W_(W), transpose_(transpose) {
    K_ = transpose ? W.size(1) : W.size(0);
    N_ = transpose ? W.size(0) : W.size(1);
#if defined(RNNLAB_PACKED)
    if (W.scalar_type() != at::kFloat || std::getenv("RNNLAB_NO_PACKED_PRODUCT") != nullptr) return;
    const auto Wc = W.contiguous();
    panels_ = (N_ + kPanel - 1) / kPanel;
    packed_ = at::zeros({panels_, K_, kPanel}, W.options());
    const float* w = Wc.data_ptr<float>();
    float* p = packed_.data_ptr<float>();
    at::parallel_for(0, panels_, 1, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t width = std::min<int64_t>(kPanel, N_ - q * kPanel);
        for (int64_t k = 0; k < K_; ++k) {
          float* row = p + (q * K_ + k) * kPanel;
          for (int64_t j = 0; j < width; ++j) {
            const int64_t n = q * kPanel + j;
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
#if defined(RNNLAB_PACKED)
    if (packed_.defined() && A.scalar_type() == at::kFloat && A.stride(1) == 1 &&
        out.is_contiguous()) {
      const int64_t M = A.size(0), lda = A.stride(0);
      const float* a = A.data_ptr<float>();
      const float* p = packed_.data_ptr<float>();
      float* c = out.data_ptr<float>();
      at::parallel_for(0, panels_, 1, [&](int64_t q0, int64_t q1) {
        for (int64_t q = q0; q < q1; ++q) {
          const int64_t width = std::min<int64_t>(kPanel, N_ - q * kPanel);
          for (int64_t m = 0; m < M; m += kRows) {
            tile(a + m * lda, lda, p + q * K_ * kPanel, c + m * N_ + q * kPanel,
                 int(std::min<int64_t>(kRows, M - m)), width);
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

  // rows (1..8) rows of C, one panel of width (1..32) columns: C[r, :] = sum_k A[r, k] P[k, :].
  void tile(const float* A, int64_t lda, const float* P, float* C, int rows, int64_t width) const {
    const __mmask16 m0 = mask(width), m1 = mask(width - 16);
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
#elif defined(RNNLAB_PACKED)
  // The lanes below n (0..8) set, for a masked store of a panel's last columns.
  static __m256i mask(int64_t n) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(std::clamp<int64_t>(n, 0, 8))), lanes);
  }

  // rows (1..6) rows of C, one panel of width (1..16) columns: C[r, :] = sum_k A[r, k] P[k, :].
  void tile(const float* A, int64_t lda, const float* P, float* C, int rows, int64_t width) const {
    switch (rows) {
      case 6: return tile_rows<6>(A, lda, P, C, width);
      case 5: return tile_rows<5>(A, lda, P, C, width);
      case 4: return tile_rows<4>(A, lda, P, C, width);
      case 3: return tile_rows<3>(A, lda, P, C, width);
      case 2: return tile_rows<2>(A, lda, P, C, width);
      default: return tile_rows<1>(A, lda, P, C, width);
    }
  }

  template <int R>
  void tile_rows(const float* A, int64_t lda, const float* P, float* C, int64_t width) const {
    // Fully unrolled over r, so that the accumulators live in registers (without the pragmas
    // GCC kept them on the stack, a store per FMA, and ran 1.3-1.5 times slower than MKL).
    __m256 c0[R], c1[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      c0[r] = _mm256_setzero_ps();
      c1[r] = _mm256_setzero_ps();
    }
    for (int64_t k = 0; k < K_; ++k) {
      const __m256 b0 = _mm256_loadu_ps(P + k * 16), b1 = _mm256_loadu_ps(P + k * 16 + 8);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m256 a = _mm256_broadcast_ss(A + r * lda + k);
        c0[r] = _mm256_fmadd_ps(a, b0, c0[r]);
        c1[r] = _mm256_fmadd_ps(a, b1, c1[r]);
      }
    }
    if (width == 16) {
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        _mm256_storeu_ps(C + r * N_, c0[r]);
        _mm256_storeu_ps(C + r * N_ + 8, c1[r]);
      }
      return;
    }
    const __m256i m0 = mask(width), m1 = mask(width - 8);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      _mm256_maskstore_ps(C + r * N_, m0, c0[r]);
      _mm256_maskstore_ps(C + r * N_ + 8, m1, c1[r]);
    }
  }
#endif

  at::Tensor W_;
  bool transpose_;
  int64_t K_ = 0, N_ = 0, panels_ = 0;
  at::Tensor packed_;
};

}  // namespace rnnlab
