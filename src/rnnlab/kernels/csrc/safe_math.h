// Gate nonlinearities for the fused kernels, safe under -ffast-math.
//
// -ffast-math lets the compiler assume that no value is infinite: a vectorised 1 / (1 + exp(-x))
// may then use a reciprocal estimate whose Newton step turns exp(-x) = inf into NaN, which a long
// sequence that saturates a gate does produce. sigmoid(x) = (1 + tanh(x / 2)) / 2 has no division
// and no overflow (tanh saturates to +-1) and passes a NaN through; it is exact to a few ulp in
// absolute terms, which is what a gate needs.
//
// float: tanh is a rational function, x P(x^2) / Q(x^2) (P of degree 5, Q of degree 4; our own
// fit, by Loeb's reweighted least squares on [0, 9], float64 error 1.2e-9: bench/tanh_fit.py) on
// x clamped to [-9, 9]. Compiled here (with FMA) its float32 error measured 2.8e-7 at most,
// 3.8e-7 evaluated without FMA (libm's tanhf: 1e-7), 2e-7 relative near 0; beyond 9 it is
// exactly +-1, and it passes a NaN through (the clamp compares the bits as integers, so a NaN is
// left as it is: tests/test_backends.py checks every fused cell against the step loop). Against
// glibc's vectorised tanhf, the LSTM's gate pass (three sigmoids and two tanh a unit) takes
// 0.53-0.61 of the time (1.6-1.7 against 2.9-3.1 ms for 100 steps of 32 x 256 units, this
// project's AVX2 VM: bench/gate_pass.py). float64 keeps std::tanh, which the float64 parity
// tests and gradchecks hold to 1e-10.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace rnnlab {

template <typename T>
inline T tanh(T x) {
  return std::tanh(x);
}

template <>
inline float tanh<float>(float x) {
  // The clamp on the bits: under -ffast-math a float comparison may become a min or max, which
  // drops a NaN; integer comparisons are not rewritten. |x| above 9 (infinities included, NaNs
  // not: their magnitude bits lie above the infinity's) becomes 9 with x's sign.
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  const uint32_t magnitude = u & 0x7fffffffu;
  const bool big = magnitude > 0x41100000u && magnitude <= 0x7f800000u;  // 9.0f, infinity
  const uint32_t clamped = big ? (u & 0x80000000u) | 0x41100000u : u;
  float xc;
  std::memcpy(&xc, &clamped, sizeof xc);
  const float t = xc * xc;
  const float p = ((((-1.2162619873104844e-11f * t + 3.051947472473691e-08f) * t +
                     2.7976552429899746e-05f) * t + 0.003866684819076702f) * t +
                   0.13678573509871922f) * t + 0.9999999960338996f;
  const float q = (((1.2853249448753055e-06f * t + 0.00039358149075212204f) * t +
                    0.027239728194344396f) * t + 0.470119048331139f) * t + 1.0f;
  const float r = xc * p / q;
  // Beyond 9, exactly +-1 (as std::tanh in float32 from about 9.01): a saturated gate's
  // derivative 1 - y^2 is then 0, as the step loop's, not 1e-7 times a huge input's product.
  uint32_t bits;
  std::memcpy(&bits, &r, sizeof bits);
  bits = big ? (u & 0x80000000u) | 0x3f800000u : bits;  // 1.0f with x's sign
  float y;
  std::memcpy(&y, &bits, sizeof y);
  return y;
}

template <typename T>
inline T sigmoid(T x) {
  return T(0.5) * rnnlab::tanh(T(0.5) * x) + T(0.5);
}

}  // namespace rnnlab
