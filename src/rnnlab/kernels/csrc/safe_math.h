// Gate nonlinearities for the fused kernels, safe under -ffast-math.
//
// -ffast-math lets the compiler assume that no value is infinite: a vectorised 1 / (1 + exp(-x))
// may then use a reciprocal estimate whose Newton step turns exp(-x) = inf into NaN, which a long
// sequence that saturates a gate does produce. sigmoid(x) = (1 + tanh(x / 2)) / 2 has no division
// and no overflow (tanh saturates to +-1) and passes a NaN through; it is exact to a few ulp in
// absolute terms, which is what a gate needs.
#pragma once

#include <cmath>

namespace rnnlab {

template <typename T>
inline T sigmoid(T x) {
  return T(0.5) * std::tanh(T(0.5) * x) + T(0.5);
}

template <typename T>
inline T tanh(T x) {
  return std::tanh(x);
}

}  // namespace rnnlab
