"""The uBRU (Bittar & Garner 2022; ``rnnlab.cells.bru``) on a GPU: Triton kernels, the twins of
the fused CPU kernels (csrc/bru.cpp), for the filter recursion and the smoothing pass, each with
its backward. With p1 = sigmoid(theta_1), p2 = sigmoid(theta_2) (H) from the caller (which
differentiates the sigmoid):

    filter:     q_t = p1 a_{t-1} + p2 (1 - a_{t-1}),  r_t = exp(min(x_t, 10)),
                a_t = q_t / (q_t + r_t (1 - q_t) + 1e-11)
    smoothing:  gamma_{L-1} = a_{L-1}, from each row's last valid step L - 1 back,
                gamma_t = a_t (p1 g / q' + (1 - p1) (1 - g) / (1 - q'))
                with g = gamma_{t+1}, q' = q_{t+1} = p1 a_t + p2 (1 - a_t).

The uBRU has no recurrent product (x_proj = W x is one product outside; every unit runs its own
scalar recursion), so nothing couples units within a step: each of the four passes is ONE
*persistent* kernel, one program per (batch row, block of units) walking all the steps with its
recursion in registers, and nothing runs per step on the host. The gradients of p1 and p2 are
accumulated per (row, unit) in float64, as the CPU kernels', and summed over the rows after.

- Filter: a padded step (``valid`` (T, B), any pattern) keeps the state and outputs 0. Nothing but
  the outputs is saved: the backward reads a_{t-1} from the output of the row's previous valid
  step (``prev`` (T, B), computed once on the host), or a_0.
- Smoothing: each row within its own length (``lengths`` (B), clamped to [0, T]); 0 from L on.
  Its backward walks forwards in t with the gradient reaching gamma_t carried in registers.

``min(x, 10)`` keeps a NaN (a NaN input reaches a_t as on the step loop) and passes x's gradient
only where x <= 10, as torch's clamp. No GPU has been lent to this project: these kernels are
tested in Triton's interpreter on the CPU (``tests/test_gpu_bru.py``,
``tests/test_gpu_kernels.py``) against the step loop and ``smooth``'s PyTorch recursion.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

try:  # Triton comes with torch's CUDA wheels; the CPU wheel runs the step loop on a GPU
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover (Triton is a dev dependency)
    triton = None

EPS = 1e-11  # the step's
CLAMP = 10.0  # r_t = exp(min(x_t, 10))


def available() -> bool:
    return triton is not None


if triton is not None:
    # Only Triton's builtins (as in kernels.gpu): library helpers decorated before
    # TRITON_INTERPRET is set would not run in the interpreter.

    @triton.jit
    def _filter_forward(  # type: ignore[no-untyped-def]
        x, p1_p, p2_p, a0, valid, Y, aT, T, B, H,
        HAS_VALID: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """All T steps of one batch row (program 0) and BLOCK units (program 1): Y the filtered
        posteriors (0 on padded steps), aT the state after the row's last valid step."""
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        at_row = row * H + cols
        p1 = tl.load(p1_p + cols, mask=keep, other=0.0)
        p2 = tl.load(p2_p + cols, mask=keep, other=0.0)
        a = tl.load(a0 + at_row, mask=keep, other=0.0)
        zero = tl.full([BLOCK], 0.0, a.dtype)
        ceiling = tl.full([BLOCK], 10.0, a.dtype)
        for t in range(0, T):
            at = tl.cast(t, tl.int64) * B * H + at_row  # 64-bit: T B H may pass 2^31
            xt = tl.load(x + at, mask=keep, other=0.0)
            q = p1 * a + p2 * (1.0 - a)
            r = tl.exp(tl.where(xt > 10.0, ceiling, xt))  # min(x, 10), a NaN kept
            a_t = q / (q + r * (1.0 - q) + 1e-11)
            out = a_t
            if HAS_VALID:  # a padded step keeps the state and outputs 0
                on = tl.load(valid + t * B + row) != 0
                a_t = tl.where(on, a_t, a)
                out = tl.where(on, out, zero)
            tl.store(Y + at, out, mask=keep)
            a = a_t
        tl.store(aT + at_row, a, mask=keep)

    @triton.jit
    def _filter_backward(  # type: ignore[no-untyped-def]
        dY, da_st, x, Y, p1_p, p2_p, a0, valid, prev, dX, dp, T, B, H,
        HAS_VALID: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """The steps in reverse: ``da_st`` (B, H) holds the gradient of a_T in and of a_0 out;
        dX gets d x_t (0 on padded steps), dp (2, B, H) float64 the gradients of p1, p2. With
        D = q + r (1 - q) + eps: da/dq = (r + eps) / D^2, da/dr = -q (1 - q) / D^2."""
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        at_row = row * H + cols
        BH = B * H
        p1 = tl.load(p1_p + cols, mask=keep, other=0.0)
        p2 = tl.load(p2_p + cols, mask=keep, other=0.0)
        a_first = tl.load(a0 + at_row, mask=keep, other=0.0)
        da = tl.load(da_st + at_row, mask=keep, other=0.0)
        zero = tl.full([BLOCK], 0.0, da.dtype)
        ceiling = tl.full([BLOCK], 10.0, da.dtype)
        dp1 = tl.full([BLOCK], 0.0, tl.float64)
        dp2 = tl.full([BLOCK], 0.0, tl.float64)
        for i in range(0, T):
            t = T - 1 - i
            at = tl.cast(t, tl.int64) * BH + at_row
            # the previous valid step, whose output is a_{t-1}; a_0 where it is -1
            before = tl.load(prev + t * B + row) if HAS_VALID else t - 1
            a_seen = tl.load(
                Y + tl.cast(tl.maximum(before, 0), tl.int64) * BH + at_row, mask=keep, other=0.0
            )
            ap = tl.where(before >= 0, a_seen, a_first)
            xt = tl.load(x + at, mask=keep, other=0.0)
            q = p1 * ap + p2 * (1.0 - ap)
            r = tl.exp(tl.where(xt > 10.0, ceiling, xt))
            D = q + r * (1.0 - q) + 1e-11
            g_D2 = (da + tl.load(dY + at, mask=keep, other=0.0)) / (D * D)
            dq = g_D2 * (r + 1e-11)
            dx = tl.where(xt <= 10.0, -g_D2 * q * (1.0 - q) * r, zero)  # not at a NaN either
            c1 = dq * ap
            c2 = dq * (1.0 - ap)
            da_prev = dq * (p1 - p2)
            if HAS_VALID:  # padding: the state passes through, and its gradient
                on = tl.load(valid + t * B + row) != 0
                dx = tl.where(on, dx, zero)
                c1 = tl.where(on, c1, zero)
                c2 = tl.where(on, c2, zero)
                da_prev = tl.where(on, da_prev, da)
            tl.store(dX + at, dx, mask=keep)
            dp1 += c1.to(tl.float64)
            dp2 += c2.to(tl.float64)
            da = da_prev
        tl.store(da_st + at_row, da, mask=keep)
        tl.store(dp + at_row, dp1, mask=keep)
        tl.store(dp + BH + at_row, dp2, mask=keep)

    @triton.jit
    def _smooth_forward(  # type: ignore[no-untyped-def]
        A, p1_p, p2_p, lengths, G, T, B, H, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """gamma of one batch row and BLOCK units, from its last valid step L - 1 back to 0;
        0 from L on."""
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        at_row = row * H + cols
        p1 = tl.load(p1_p + cols, mask=keep, other=0.5)  # no 0 / 0 in lanes past H
        p2 = tl.load(p2_p + cols, mask=keep, other=0.5)
        L = tl.load(lengths + row)
        g = tl.full([BLOCK], 0.0, p1.dtype)  # gamma_{t+1}
        zero = g
        for i in range(0, T):
            t = T - 1 - i
            at = tl.cast(t, tl.int64) * B * H + at_row  # 64-bit: T B H may pass 2^31
            a = tl.load(A + at, mask=keep, other=0.0)
            q = p1 * a + p2 * (1.0 - a)  # the prior predicted from a_t for t + 1
            gamma = a * (p1 * g / q + (1.0 - p1) * (1.0 - g) / (1.0 - q))
            gamma = tl.where(t == L - 1, a, gamma)
            gamma = tl.where(t >= L, zero, gamma)
            tl.store(G + at, gamma, mask=keep)
            g = gamma

    @triton.jit
    def _smooth_backward(  # type: ignore[no-untyped-def]
        dG, A, G, p1_p, p2_p, lengths, dA, dp, T, B, H, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """Walked forwards in t, the gradient reaching gamma_t from gamma_{t-1} carried: with
        u = p1 / q, v = (1 - p1) / (1 - q), gamma_t = a_t S, S = u gamma_{t+1} + v (1 -
        gamma_{t+1}). dA gets a_t's gradient (0 from L on), dp (2, B, H) float64 p1's, p2's."""
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        at_row = row * H + cols
        BH = B * H
        p1 = tl.load(p1_p + cols, mask=keep, other=0.5)  # no 0 / 0 in lanes past H
        p2 = tl.load(p2_p + cols, mask=keep, other=0.5)
        L = tl.load(lengths + row)
        carry = tl.full([BLOCK], 0.0, p1.dtype)
        zero = carry
        dp1 = tl.full([BLOCK], 0.0, tl.float64)
        dp2 = tl.full([BLOCK], 0.0, tl.float64)
        for t in range(0, T):
            at = tl.cast(t, tl.int64) * BH + at_row
            grad = tl.load(dG + at, mask=keep, other=0.0) + carry
            a = tl.load(A + at, mask=keep, other=0.0)
            g = tl.load(
                G + tl.cast(tl.minimum(t + 1, T - 1), tl.int64) * BH + at_row, mask=keep, other=0.0
            )
            q = p1 * a + p2 * (1.0 - a)
            u = p1 / q
            v = (1.0 - p1) / (1.0 - q)
            S = u * g + v * (1.0 - g)
            dS = grad * a
            dq = dS * (v * (1.0 - g) / (1.0 - q) - u * g / q)
            c1 = dS * (g / q - (1.0 - g) / (1.0 - q)) + dq * a
            c2 = dq * (1.0 - a)
            inner = t < L - 1  # gamma_t reads gamma_{t+1}; gamma_{L-1} = a_{L-1}
            d_a = tl.where(inner, grad * S + dq * (p1 - p2), tl.where(t == L - 1, grad, zero))
            tl.store(dA + at, d_a, mask=keep)
            dp1 += tl.where(inner, c1, zero).to(tl.float64)
            dp2 += tl.where(inner, c2, zero).to(tl.float64)
            carry = tl.where(inner, dS * (u - v), zero)
        tl.store(dp + at_row, dp1, mask=keep)
        tl.store(dp + BH + at_row, dp2, mask=keep)


def _block(H: int) -> int:
    return min(128, triton.next_power_of_2(H))


def _grid(B: int, H: int) -> tuple[int, int]:
    return (B, triton.cdiv(H, _block(H)))


def _previous_valid(v8: Tensor) -> Tensor:
    """(T, B) int32: each step's previous valid step, or -1 (a_0 is the state before it)."""
    T = v8.shape[0]
    steps = torch.arange(T, device=v8.device, dtype=torch.int32)[:, None]
    last = torch.where(v8 != 0, steps, -1).cummax(0).values  # the last valid step <= t
    return torch.cat([torch.full_like(last[:1], -1), last[:-1]]).to(torch.int32).contiguous()


class _FilterFunction(torch.autograd.Function):
    """The filter recursion of one layer and direction."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x_proj: Tensor, p1: Tensor, p2: Tensor, a0: Tensor, valid: Tensor
    ) -> tuple[Tensor, Tensor]:
        T, B, H = x_proj.shape
        has_valid = valid.numel() > 0
        v8 = valid.to(torch.int8).contiguous() if has_valid else valid
        p1, p2, a0 = p1.contiguous(), p2.contiguous(), a0.contiguous()
        Y = x_proj.new_empty(T, B, H)
        aT = x_proj.new_empty(B, H)
        _filter_forward[_grid(B, H)](x_proj, p1, p2, a0, v8, Y, aT, T, B, H,
                                     HAS_VALID=has_valid, BLOCK=_block(H))  # fmt: skip
        ctx.save_for_backward(x_proj, Y, p1, p2, a0, v8)
        ctx.set_materialize_grads(False)
        return Y, aT

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, dY: Tensor | None, daT: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        x_proj, Y, p1, p2, a0, v8 = ctx.saved_tensors
        T, B, H = x_proj.shape
        has_valid = v8.numel() > 0
        dY = torch.zeros_like(Y) if dY is None else dY.contiguous()
        da = torch.zeros_like(a0) if daT is None else daT.contiguous().clone()
        prev = _previous_valid(v8) if has_valid else v8
        dX = torch.empty_like(x_proj)
        dp = torch.empty(2, B, H, dtype=torch.float64, device=x_proj.device)
        _filter_backward[_grid(B, H)](dY, da, x_proj, Y, p1, p2, a0, v8, prev, dX, dp, T, B, H,
                                      HAS_VALID=has_valid, BLOCK=_block(H))  # fmt: skip
        d = dp.sum(1).to(x_proj.dtype)
        return dX, d[0], d[1], da, None


class _SmoothFunction(torch.autograd.Function):
    """The smoothing recursion over filtered posteriors, each row within its length."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, filtered: Tensor, p1: Tensor, p2: Tensor, lengths: Tensor
    ) -> Tensor:
        T, B, H = filtered.shape
        p1, p2 = p1.contiguous(), p2.contiguous()
        gamma = torch.empty_like(filtered)
        _smooth_forward[_grid(B, H)](filtered, p1, p2, lengths, gamma, T, B, H,
                                     BLOCK=_block(H))  # fmt: skip
        ctx.save_for_backward(filtered, gamma, p1, p2, lengths)
        return gamma

    @staticmethod
    def backward(ctx: Any, d_gamma: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        filtered, gamma, p1, p2, lengths = ctx.saved_tensors
        T, B, H = filtered.shape
        d_filtered = torch.empty_like(filtered)
        dp = torch.empty(2, B, H, dtype=torch.float64, device=filtered.device)
        _smooth_backward[_grid(B, H)](d_gamma.contiguous(), filtered, gamma, p1, p2, lengths,
                                      d_filtered, dp, T, B, H, BLOCK=_block(H))  # fmt: skip
        d = dp.sum(1).to(filtered.dtype)
        return d_filtered, d[0], d[1], None


def filter_sequence(
    x_proj: Tensor, p1: Tensor, p2: Tensor, a0: Tensor, valid: Tensor | None
) -> tuple[Tensor, Tensor]:
    """One layer and direction of the uBRU's filter: x_proj (T, B, H), p1, p2 (H), a0 (B, H),
    valid (T, B) bool or None -> (filtered posteriors (T, B, H), a_T (B, H))."""
    e = x_proj.new_empty(0, dtype=torch.bool)
    Y, aT = _FilterFunction.apply(x_proj.contiguous(), p1, p2, a0, e if valid is None else valid)
    return Y, aT


def smooth_sequence(filtered: Tensor, p1: Tensor, p2: Tensor, lengths: Tensor | None) -> Tensor:
    """The smoothing recursion over filtered posteriors (T, B, H), each sequence from its last
    step (``lengths`` (B), or None for all T); padded steps come back as zeros."""
    T, B = filtered.shape[:2]
    if lengths is None:
        n = torch.full((B,), T, dtype=torch.int32, device=filtered.device)
    else:
        n = lengths.to(device=filtered.device).clamp(0, T).to(torch.int32).contiguous()
    gamma: Tensor = _SmoothFunction.apply(filtered.contiguous(), p1, p2, n)
    return gamma


def bru_sequence(
    cell: Any, x_proj: Tensor, state: tuple[Tensor, ...], valid: Tensor | None
) -> tuple[Tensor, tuple[Tensor, ...]] | None:
    """One layer and direction of a uBRU cell's filter (its smoothing follows in ``cell.smooth``),
    or None where the kernels do not apply (no Triton; a step normalisation, ``options.norm``)."""
    if triton is None or cell.step_norms is not None:
        return None
    p1, p2 = (p.to(x_proj.dtype) for p in cell._transitions())
    Y, aT = filter_sequence(x_proj, p1, p2, state[0], valid)
    return Y, (aT,)
