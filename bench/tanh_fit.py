"""The float32 gates' tanh of the fused kernels (src/rnnlab/kernels/csrc/safe_math.h): fits
tanh(x) ~ x P(x^2) / Q(x^2) on [0, 9] (P of degree 5, Q of degree 4, Q(0) = 1) by Loeb's
reweighted linear least squares on Chebyshev nodes, prints the coefficients in x^2 and the
errors, in float64 and evaluated in float32 as the kernel does (Horner), over [-20, 20].

    .venv/bin/python bench/tanh_fit.py
"""

from __future__ import annotations

import numpy as np

CLAMP = 9.0


def fit(p: int = 5, q: int = 4, iterations: int = 30) -> tuple[np.ndarray, np.ndarray, float]:
    """Coefficients of P and Q in t = x^2 (lowest first) and the float64 maximum error."""
    x = np.cos(np.linspace(0, np.pi, 40001)) * CLAMP / 2 + CLAMP / 2
    x = x[x > 1e-6]
    s = (x / CLAMP) ** 2  # t scaled to (0, 1] for the fit's conditioning
    f = np.tanh(x)
    weight = np.ones_like(x)
    for _ in range(iterations):
        # x P(s) - f Q(s) = 0 with Q(0) = 1, linear in the coefficients; weighting by 1 / |Q|
        # turns its minimiser towards that of the rational function's own error.
        A = np.concatenate([x[:, None] * s[:, None] ** np.arange(p + 1),
                            -f[:, None] * s[:, None] ** np.arange(1, q + 1)], axis=1)  # fmt: skip
        sol = np.linalg.lstsq(A * weight[:, None], f * weight, rcond=None)[0]
        P, Q = sol[: p + 1], np.concatenate([[1.0], sol[p + 1 :]])
        Qs = np.polyval(Q[::-1], s)
        weight = 1 / np.abs(Qs)
    error = np.abs(x * np.polyval(P[::-1], s) / Qs - f).max()
    unscale_p = CLAMP ** (-2.0 * np.arange(p + 1))
    unscale_q = CLAMP ** (-2.0 * np.arange(q + 1))
    return P * unscale_p, Q * unscale_q, float(error)


def evaluate_float32(x: np.ndarray, P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """As the kernel: clamp, Horner in float32, exactly +-1 beyond the clamp."""
    x = x.astype(np.float32)
    xc = np.clip(x, -CLAMP, CLAMP).astype(np.float32)
    t = xc * xc
    pv, qv = np.float32(P[-1]), np.float32(Q[-1])
    for c in P[-2::-1]:
        pv = (pv * t + np.float32(c)).astype(np.float32)
    for c in Q[-2::-1]:
        qv = (qv * t + np.float32(c)).astype(np.float32)
    y = (xc * pv / qv).astype(np.float32)
    return np.where(np.abs(x) > CLAMP, np.sign(x), y).astype(np.float32)


def main() -> None:
    P, Q, error = fit()
    print("P (x^2 powers 0..5):", ", ".join(f"{c!r}" for c in P.tolist()))
    print("Q (x^2 powers 0..4):", ", ".join(f"{c!r}" for c in Q.tolist()))
    print(f"float64 maximum error on [0, {CLAMP}]: {error:.2e}")
    xs = np.linspace(-20, 20, 4_000_001).astype(np.float32)
    want = np.tanh(xs.astype(np.float64))
    got = evaluate_float32(xs, P, Q).astype(np.float64)
    libm = np.abs(np.tanh(xs).astype(np.float64) - want).max()
    print(f"float32 evaluation, maximum absolute error on [-20, 20]: "
          f"{np.abs(got - want).max():.2e} (numpy's float32 tanh: {libm:.2e})")  # fmt: skip
    small = xs[(np.abs(xs) < 0.05) & (xs != 0)]
    exact = np.tanh(small.astype(np.float64))
    rel = np.abs(evaluate_float32(small, P, Q) - exact) / np.abs(exact)
    print(f"relative error for |x| < 0.05: {rel.max():.2e}")


if __name__ == "__main__":
    main()
