"""adLIF and RadLIF (Bittar & Garner 2022; ``rnnlab.cells.spiking``) on a GPU: Triton kernels, the
twins of the fused CPU kernels (csrc/spiking.cpp). Per step and neuron, with the clamped alpha,
beta, a, b (H) and, for RadLIF, V (H, H) with its diagonal zeroed (both from the caller, under
autograd), m the recurrent-dropout mask (B, H) or none:

    w_t = beta w_{t-1} + a u_{t-1} + b s_{t-1}
    d_t = I_t - w_t (+ V (m s_{t-1}))            (the drive; RadLIF only adds V (m s))
    u_t = alpha (u_{t-1} - s_{t-1}) + (1 - alpha) d_t
    s_t = H(u_t - 1)                             (H(0) = 0)

and the box-car surrogate d s / d u := 1 where -0.5 < u - 1 <= 0.5 (``BoxcarSpike``).

adLIF couples no units within a step: one *persistent* kernel runs the whole time loop, one
program per (batch row, block of units), the state (s, u, w) in registers; its backward is one
persistent kernel too, walking the steps in reverse with the gradients of (s, u, w) and the
coefficients' sums in registers. RadLIF has one product a step: forward, ``(m s_{t-1}) V^T``
(cuBLAS) then the same kernel over one step; backward, the same reverse kernel over one step, then
``d_t V`` (cuBLAS), which the next step's kernel adds (times m) to the gradient of s_{t-1}. The
kernel writes d x_proj_t, which is also the gradient of the recurrent product: dV is one product
after the loop, dV = sum_t d_t^T (m s_{t-1}).

Saved for the backward: u_t, w_t of every step (padded steps hold the carried state) and, for
RadLIF, the drive d_t. s_{t-1} is recomputed as H(u_{t-1} - 1), except before a row's first
valid step, where it is the initial s_0 (``lead``, the count of leading padded steps). The
coefficients' gradients are accumulated per (row, unit) in float64, as the CPU kernel's, and
summed over the rows after the loop. The spike-rate tally is the output spikes, as the CPU's.

No GPU has been lent to this project: these kernels are tested in Triton's interpreter on the
CPU (``tests/test_gpu_spiking.py``, ``tests/test_gpu_kernels.py``) against the step loop.
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


def available() -> bool:
    return triton is not None


if triton is not None:
    # Only Triton's builtins (as in kernels.gpu): library helpers decorated before
    # TRITON_INTERPRET is set would not run in the interpreter.

    @triton.jit
    def _spiking_forward_steps(  # type: ignore[no-untyped-def]
        x, rec, s_st, u_st, w_st, s_in, rmask, alpha_p, beta_p, a_p, b_p, valid, Y, U, W, D,
        t0, t1, B, H,
        REC: tl.constexpr, HAS_MASK: tl.constexpr, HAS_VALID: tl.constexpr,
        SAVE: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """Steps t0 .. t1 - 1 of one batch row (program 0) and BLOCK units (program 1), the state
        (s, u, w) read from and written back to ``s_st``, ``u_st``, ``w_st`` (B, H). With
        ``REC`` (one step, t1 = t0 + 1), ``rec`` (B, H) = (m s_{t-1}) V^T joins the drive, and
        ``s_in`` gets m s_t for the next step's product (with ``HAS_MASK``). Y gets the spikes (0
        on padded steps); with ``SAVE``, U, W get u_t, w_t (the carried state on padded steps)
        and, with ``REC``, D the drive."""
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        at_row = row * H + cols
        alpha = tl.load(alpha_p + cols, mask=keep, other=0.0)
        beta = tl.load(beta_p + cols, mask=keep, other=0.0)
        a = tl.load(a_p + cols, mask=keep, other=0.0)
        b = tl.load(b_p + cols, mask=keep, other=0.0)
        s = tl.load(s_st + at_row, mask=keep, other=0.0)
        u = tl.load(u_st + at_row, mask=keep, other=0.0)
        w = tl.load(w_st + at_row, mask=keep, other=0.0)
        one = tl.full([BLOCK], 1.0, u.dtype)
        zero = tl.full([BLOCK], 0.0, u.dtype)
        for t in range(t0, t1):
            at = tl.cast(t, tl.int64) * B * H + at_row  # 64-bit: T B H may pass 2^31
            w_t = beta * w + a * u + b * s
            d = tl.load(x + at, mask=keep, other=0.0) - w_t
            if REC:
                d = d + tl.load(rec + at_row, mask=keep, other=0.0)
            u_t = alpha * (u - s) + (1.0 - alpha) * d
            s_t = tl.where(u_t - 1.0 > 0.0, one, zero)
            out = s_t
            if HAS_VALID:  # a padded step keeps the state and outputs 0
                on = tl.load(valid + t * B + row) != 0
                s_t = tl.where(on, s_t, s)
                u_t = tl.where(on, u_t, u)
                w_t = tl.where(on, w_t, w)
                out = tl.where(on, out, zero)
            tl.store(Y + at, out, mask=keep)
            if SAVE:
                tl.store(U + at, u_t, mask=keep)
                tl.store(W + at, w_t, mask=keep)
                if REC:
                    tl.store(D + at, d, mask=keep)
            s = s_t
            u = u_t
            w = w_t
        tl.store(s_st + at_row, s, mask=keep)
        tl.store(u_st + at_row, u, mask=keep)
        tl.store(w_st + at_row, w, mask=keep)
        if HAS_MASK:
            tl.store(s_in + at_row, s * tl.load(rmask + at_row, mask=keep, other=0.0), mask=keep)

    @triton.jit
    def _spiking_backward_steps(  # type: ignore[no-untyped-def]
        dY, x, U, W, D, s0, u0, w0, lead, alpha_p, beta_p, a_p, b_p, valid, ds_st, du_st,
        dw_st, through, rmask, dX, d_coef, t0, t1, B, H,
        REC: tl.constexpr, THROUGH: tl.constexpr, HAS_MASK: tl.constexpr,
        HAS_VALID: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """Steps t1 - 1 down to t0 of one batch row and BLOCK units: the gradients of (s, u, w)
        after step t1 - 1 are read from ``ds_st``, ``du_st``, ``dw_st`` (B, H) and those before
        step t0 written back; with ``THROUGH`` (RadLIF), ``through`` (B, H) = d_{t1} V, times m,
        is added to the gradient of s first. dX gets d x_proj_t = (1 - alpha) d u_t, 0 on padded
        steps; d_coef (4, B, H) float64 accumulates the gradients of alpha, beta, a, b."""
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        at_row = row * H + cols
        BH = B * H
        alpha = tl.load(alpha_p + cols, mask=keep, other=0.0)
        beta = tl.load(beta_p + cols, mask=keep, other=0.0)
        a = tl.load(a_p + cols, mask=keep, other=0.0)
        b = tl.load(b_p + cols, mask=keep, other=0.0)
        s_first = tl.load(s0 + at_row, mask=keep, other=0.0)
        u_first = tl.load(u0 + at_row, mask=keep, other=0.0)
        w_first = tl.load(w0 + at_row, mask=keep, other=0.0)
        leading = tl.load(lead + row)  # steps before the row's first valid one
        ds = tl.load(ds_st + at_row, mask=keep, other=0.0)
        du = tl.load(du_st + at_row, mask=keep, other=0.0)
        dw = tl.load(dw_st + at_row, mask=keep, other=0.0)
        if THROUGH:  # d s_{t1-1} += m (d_{t1} V)
            g = tl.load(through + at_row, mask=keep, other=0.0)
            if HAS_MASK:
                g = g * tl.load(rmask + at_row, mask=keep, other=0.0)
            ds = ds + g
        d_alpha = tl.load(d_coef + at_row, mask=keep, other=0.0)
        d_beta = tl.load(d_coef + BH + at_row, mask=keep, other=0.0)
        d_a = tl.load(d_coef + 2 * BH + at_row, mask=keep, other=0.0)
        d_b = tl.load(d_coef + 3 * BH + at_row, mask=keep, other=0.0)
        one = tl.full([BLOCK], 1.0, u_first.dtype)
        zero = tl.full([BLOCK], 0.0, u_first.dtype)
        for i in range(0, t1 - t0):
            t = t1 - 1 - i
            at = tl.cast(t, tl.int64) * BH + at_row
            before = (
                tl.cast(tl.maximum(t - 1, 0), tl.int64) * BH + at_row
            )  # step t - 1 (read where t > 0)
            u_prev = tl.where(t > 0, tl.load(U + before, mask=keep, other=0.0), u_first)
            w_prev = tl.where(t > 0, tl.load(W + before, mask=keep, other=0.0), w_first)
            s_prev = tl.where(t <= leading, s_first, tl.where(u_prev - 1.0 > 0.0, one, zero))
            u = tl.load(U + at, mask=keep, other=0.0)
            if REC:
                d = tl.load(D + at, mask=keep, other=0.0)
            else:  # d_t = I_t - w_t, recomputed as the forward computed it
                d = tl.load(x + at, mask=keep, other=0.0) - tl.load(W + at, mask=keep, other=0.0)
            v = u - 1.0
            surrogate = tl.where((v > -0.5) & (v <= 0.5), one, zero)
            gu = du + (ds + tl.load(dY + at, mask=keep, other=0.0)) * surrogate
            gd = gu * (1.0 - alpha)  # d x_t, and d (V m s_{t-1})
            gw = dw - gd  # w = beta w' + a u' + b s'
            c_alpha = gu * (u_prev - s_prev - d)
            c_beta = gw * w_prev
            c_a = gw * u_prev
            c_b = gw * s_prev
            du_prev = gu * alpha + gw * a
            dw_prev = gw * beta
            ds_prev = gw * b - gu * alpha
            if HAS_VALID:  # padding: the gradients pass to the carried state
                on = tl.load(valid + t * B + row) != 0
                gd = tl.where(on, gd, zero)
                c_alpha = tl.where(on, c_alpha, zero)
                c_beta = tl.where(on, c_beta, zero)
                c_a = tl.where(on, c_a, zero)
                c_b = tl.where(on, c_b, zero)
                du_prev = tl.where(on, du_prev, du)
                dw_prev = tl.where(on, dw_prev, dw)
                ds_prev = tl.where(on, ds_prev, ds)
            tl.store(dX + at, gd, mask=keep)
            d_alpha += c_alpha.to(tl.float64)
            d_beta += c_beta.to(tl.float64)
            d_a += c_a.to(tl.float64)
            d_b += c_b.to(tl.float64)
            ds = ds_prev
            du = du_prev
            dw = dw_prev
        tl.store(ds_st + at_row, ds, mask=keep)
        tl.store(du_st + at_row, du, mask=keep)
        tl.store(dw_st + at_row, dw, mask=keep)
        tl.store(d_coef + at_row, d_alpha, mask=keep)
        tl.store(d_coef + BH + at_row, d_beta, mask=keep)
        tl.store(d_coef + 2 * BH + at_row, d_a, mask=keep)
        tl.store(d_coef + 3 * BH + at_row, d_b, mask=keep)


def _block(H: int) -> int:
    return min(128, triton.next_power_of_2(H))


def _grid(B: int, H: int) -> tuple[int, int]:
    return (B, triton.cdiv(H, _block(H)))


def _leading_padding(valid: Tensor, B: int, like: Tensor) -> Tensor:
    """(B) int32: the steps before each row's first valid one (all T for an empty row)."""
    if valid.numel() == 0:
        return torch.zeros(B, dtype=torch.int32, device=like.device)
    return (valid.to(torch.int32).cumsum(0) == 0).sum(0).to(torch.int32)


def _previous_spikes(U: Tensor, s0: Tensor, lead: Tensor) -> Tensor:
    """s_{t-1} of every step (T, B, H): H(u_{t-1} - 1), or s_0 up to a row's first valid step."""
    T = U.shape[0]
    spikes = torch.cat([s0[None], (U[:-1] - 1.0 > 0.0).to(U.dtype)])
    first = torch.arange(T, device=U.device)[:, None] <= lead[None, :]  # (T, B)
    return torch.where(first[..., None], s0[None], spikes)


class _SpikingFunction(torch.autograd.Function):
    """One layer and direction of adLIF (V empty) or RadLIF."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x_proj: Tensor, alpha: Tensor, beta: Tensor, a: Tensor, b: Tensor, V: Tensor,
        s0: Tensor, u0: Tensor, w0: Tensor, valid: Tensor, rmask: Tensor, save: bool,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
        T, B, H = x_proj.shape
        rec_on, has_valid, has_mask = V.numel() > 0, valid.numel() > 0, rmask.numel() > 0
        has_mask = has_mask and rec_on
        coef = [c.contiguous() for c in (alpha, beta, a, b)]
        v8 = valid.to(torch.int8).contiguous() if has_valid else valid
        e = x_proj.new_empty(0)
        s, u, w = (p.contiguous().clone() for p in (s0, u0, w0))
        Y = x_proj.new_empty(T, B, H)
        U = x_proj.new_empty(T, B, H) if save else e
        W = x_proj.new_empty(T, B, H) if save else e
        D = x_proj.new_empty(T, B, H) if save and rec_on else e
        grid, kw = _grid(B, H), {"HAS_VALID": has_valid, "SAVE": save, "BLOCK": _block(H)}
        if not rec_on:  # adLIF: the whole time loop in one kernel
            _spiking_forward_steps[grid](
                x_proj, e, s, u, w, e, e, *coef, v8, Y, U, W, D, 0, T, B, H,
                REC=False, HAS_MASK=False, **kw,
            )  # fmt: skip
        else:
            VT = V.t()
            s_in = s * rmask if has_mask else s  # m s_{t-1}, written by each step's kernel
            rec = x_proj.new_empty(B, H)
            for t in range(T):
                torch.mm(s_in, VT, out=rec)
                _spiking_forward_steps[grid](
                    x_proj, rec, s, u, w, s_in, rmask, *coef, v8, Y, U, W, D, t, t + 1, B, H,
                    REC=True, HAS_MASK=has_mask, **kw,
                )  # fmt: skip
        if save:
            ctx.save_for_backward(x_proj, *coef, V, s0, u0, w0, v8, rmask, U, W, D)
        ctx.set_materialize_grads(False)
        return Y, s, u, w

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, dY: Tensor | None, dsT: Tensor | None, duT: Tensor | None, dwT: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        x_proj, alpha, beta, a, b, V, s0, u0, w0, v8, rmask, U, W, D = ctx.saved_tensors
        T, B, H = x_proj.shape
        rec_on, has_valid = V.numel() > 0, v8.numel() > 0
        has_mask = rmask.numel() > 0 and rec_on
        e = x_proj.new_empty(0)
        dY = torch.zeros_like(U) if dY is None else dY.contiguous()
        ds, du, dw = (
            torch.zeros_like(p) if g is None else g.contiguous().clone()
            for g, p in ((dsT, s0), (duT, u0), (dwT, w0))
        )
        s0, u0, w0 = s0.contiguous(), u0.contiguous(), w0.contiguous()
        lead = _leading_padding(v8, B, x_proj)
        dX = x_proj.new_empty(T, B, H)
        d_coef = torch.zeros(4, B, H, dtype=torch.float64, device=x_proj.device)
        grid = _grid(B, H)
        args = (x_proj, U, W, D, s0, u0, w0, lead, alpha, beta, a, b, v8, ds, du, dw)
        kw = {"HAS_MASK": has_mask, "HAS_VALID": has_valid, "BLOCK": _block(H)}
        dV = None
        if not rec_on:  # adLIF: the whole reverse loop in one kernel
            _spiking_backward_steps[grid](dY, *args, e, e, dX, d_coef, 0, T, B, H, REC=False,
                                          THROUGH=False, **kw)  # fmt: skip
        else:
            through = x_proj.new_empty(B, H)  # d_t V
            for t in range(T - 1, -1, -1):
                _spiking_backward_steps[grid](dY, *args, through, rmask, dX, d_coef, t, t + 1,
                                              B, H, REC=True, THROUGH=t < T - 1,
                                              **kw)  # fmt: skip
                torch.mm(dX[t], V, out=through)
            ds = ds + (through * rmask if has_mask else through)
            s_prev = _previous_spikes(U, s0, lead)
            if has_mask:
                s_prev = s_prev * rmask
            dV = dX.reshape(T * B, H).t() @ s_prev.reshape(T * B, H)
        d = d_coef.sum(1).to(x_proj.dtype)  # (4, H)
        return dX, d[0], d[1], d[2], d[3], dV, ds, du, dw, None, None, None


def spiking_sequence(
    cell: Any, x_proj: Tensor, state: tuple[Tensor, ...], valid: Tensor | None,
    rmask: Tensor | None,
) -> tuple[Tensor, tuple[Tensor, ...], tuple[Tensor, ...]] | None:  # fmt: skip
    """One layer and direction of an adLIF / RadLIF cell: x_proj (T, B, H) the input currents,
    state (s0, u0, w0), valid (T, B) bool, rmask (B, H) -> spikes (T, B, H), (s_T, u_T, w_T),
    and the spike-rate tally (the spikes). None where the kernels do not apply (no Triton; a
    step normalisation, ``options.norm``)."""
    if triton is None or cell.step_norms is not None:
        return None
    e = x_proj.new_empty(0)
    V = cell.recurrent_matrix(x_proj) if cell.recurrent else e
    args = (x_proj.contiguous(), *cell.coefficients(), V, *state[:3])
    # u_t, w_t (and the drive) saved only for a backward: not in inference
    save = torch.is_grad_enabled() and any(t.requires_grad for t in args)
    Y, sT, uT, wT = _SpikingFunction.apply(
        *args, e if valid is None else valid, e if rmask is None else rmask, save
    )
    return Y, (sT, uT, wT), (Y,)
