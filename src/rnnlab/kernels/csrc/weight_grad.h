// The recurrent weights' gradient dR = sum_t D_t^T X_t of a backward loop over t = T-1 .. 0,
// formed a chunk of K steps at a time: the loop writes D_t into slot(t) of a (K, B, n) buffer
// and calls done(t); every K steps one product over the chunk's K * B rows is added to dR. The
// buffer replaces a (T, B, n) one that would hold every step's D_t until one product after the
// loop; with K * B >= 512 rows a chunk's product runs about as fast per row as the single one.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace rnnlab {

class ChunkedWeightGrad {
 public:
  // A block of columns [offset, offset + width) of D_t times X (T, B, m): rows
  // [offset, offset + width) of dR. Blocks cover the columns of D_t that have a product.
  // With `first` (B, m) given, X is read shifted: the factor of step t is X[t - 1], first's
  // for t = 0 (the previous states without a (T, B, m) copy of them); `mask` (B, m), when
  // given, multiplies it. `column` places the block's m columns in dR (blocks over the same
  // rows of dR with different X then fill its columns side by side).
  struct Block {
    int64_t offset, width;
    at::Tensor X;
    at::Tensor first = at::Tensor();
    at::Tensor mask = at::Tensor();
    int64_t column = 0;
  };

  ChunkedWeightGrad(int64_t T, int64_t B, int64_t n, std::vector<Block> blocks,
                    const at::TensorOptions& options)
      : T_(T), B_(B), n_(n), K_(std::min<int64_t>(T, std::max<int64_t>(16, (512 + B - 1) / B))),
        blocks_(std::move(blocks)) {
    buffer_ = at::empty({K_, B, n}, options);
    int64_t columns = 0;
    for (const auto& block : blocks_) columns = std::max(columns, block.column + block.X.size(2));
    dR_ = at::zeros({n, columns}, options);
  }

  // Where step t's D_t (B, n) goes.
  at::Tensor slot(int64_t t) { return buffer_[t % K_]; }

  // Step t's D_t is written; the loop runs downwards, so t % K == 0 closes a chunk.
  void done(int64_t t) {
    if (t % K_ != 0) return;
    const int64_t count = std::min(K_, T_ - t);
    const auto D = buffer_.narrow(0, 0, count).reshape({count * B_, n_});
    for (const auto& block : blocks_) {
      const int64_t m = block.X.size(2);
      at::Tensor X;
      if (!block.first.defined()) {
        X = block.X.narrow(0, t, count);
      } else if (t > 0) {
        X = block.X.narrow(0, t - 1, count);
      } else {
        X = at::cat({block.first.unsqueeze(0), block.X.narrow(0, 0, count - 1)}, 0);
      }
      if (block.mask.defined()) X = X * block.mask;
      dR_.narrow(0, block.offset, block.width)
          .narrow(1, block.column, m)
          .addmm_(D.narrow(1, block.offset, block.width).t(), X.reshape({count * B_, m}));
    }
  }

  const at::Tensor& result() const { return dR_; }

 private:
  int64_t T_, B_, n_, K_;
  std::vector<Block> blocks_;
  at::Tensor buffer_, dR_;
};

}  // namespace rnnlab
