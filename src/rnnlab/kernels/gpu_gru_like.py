"""The tanh RNN and the GRU-like cells of issue 18 (EGRU, NC-GRU, GateL0RD's latent) on a GPU,
the twins of the CPU kernels (tanh's in csrc/gru.cpp, the others' in csrc/gru_like.cpp) in the
scheme of ``rnnlab.kernels.gpu``. Forward, per step: one recurrent product (cuBLAS ``mm`` or
``addmm``) and one Triton kernel for the gate arithmetic, the padding rule and the saved
activations. Backward, per step in reverse: one Triton kernel back through the gates, then one
product ``d pre_t R``. The weight gradients, the bias and threshold gradients and d x_proj are
single products or sums after the loop.

- tanh: y_t = tanh(x_t + (y_{t-1} m) R^T), or with layer norm tanh(x_t + g LN((y_{t-1} m)
  R^T)) (LN(W x) + b is the input projection's; one program per row, BLOCK >= H); with zoneout
  y_t = d y_{t-1} + (1 - d) y^_t, the cell's own y^_t saved for the backward.
- EGRU: rows u, r, z; rh = (y_{t-1} m) R^T + b' (one ``addmm``); the kernel forms u, r, z, c^,
  the event e = H(c^ - theta), y = e c^ and c = c^ - e theta. Its backward uses the cell's
  pseudo-derivative d e / d c^ := dampening max(0, 1 - support |c^ - theta|) (the two numbers
  come in as a tensor of the layer's dtype: a Python float would reach the kernel as float32).
- NC-GRU: rows r, u, c of one matrix [R_r; R_u; W_c] (3H, H), W_c formed by the cell once per
  sequence (``project_input``; autograd takes its gradient back through the Cayley map);
  c_t = modReLU(x_c + r_t (W_c h_in)).
- GateL0RD: the latent only, h_t = L_t tanh(x_r + R_r h_{t-1}) + (1 - L_t) h_{t-1} with
  L_t = max(0, tanh(x_g + R_g h_{t-1} - noise_t)); both h_t and L_t come out for every step
  (L_t with its gradient: the L0 penalty reads it), and the cell forms its outputs after the
  loop, as on the CPU.

Padded steps (``valid`` (T, B)) keep the state and output 0. No GPU has been lent to this
project: the kernels are tested on the CPU in Triton's interpreter (tests/test_gpu_gru_like.py,
tests/test_gpu_kernels.py) against the step loop in float64; their speed is unmeasured.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rnnlab.kernels.gpu import _block

try:  # Triton comes with torch's CUDA wheels; without it the cells fall back
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover (Triton is a dev dependency)
    triton = None


def available() -> bool:
    return triton is not None


LN_MAX_HIDDEN = 8192  # tanh's layer norm: one program holds a whole row of H units


if triton is not None:
    # Only Triton's builtins in the kernels (see rnnlab.kernels.gpu): sigmoid(x) = 1 / (1 +
    # exp(-x)), tanh(x) = 2 sigmoid(2x) - 1, row sums as tl.reduce with this combiner.
    @triton.jit
    def _add(a, b):  # type: ignore[no-untyped-def]
        return a + b

    # --- tanh ---------------------------------------------------------------------------------
    @triton.jit
    def _tanh_forward_step(  # type: ignore[no-untyped-def]
        pre, rp, gain, y_prev, valid, zone, yhat_out, rhat_out, rstd_out, y_out, Y_out, H,
        HAS_VALID: tl.constexpr, HAS_ZONE: tl.constexpr, LN: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """y^_t = tanh(pre) (pre = x_t + y R^T), or tanh(x_t + g LN(rp)) with layer norm (rp =
        y R^T; LN(rp) without its gain to ``rhat_out``, its 1/sigma to ``rstd_out``); zoneout
        and the padding rule after it. Program (b, block of units)."""
        b = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        row = b * H + cols
        a = tl.load(pre + row, mask=keep, other=0.0)
        if LN:
            r = tl.load(rp + row, mask=keep, other=0.0)
            mean = tl.reduce(r, 0, _add) / H
            dev = tl.where(keep, r - mean, 0.0)
            rstd = 1.0 / tl.sqrt(tl.reduce(dev * dev, 0, _add) / H + 1e-5)
            tl.store(rhat_out + row, dev * rstd, mask=keep)
            tl.store(rstd_out + b, rstd)
            a += tl.load(gain + cols, mask=keep, other=0.0) * (dev * rstd)
        yhat = 2.0 / (1.0 + tl.exp(-2.0 * a)) - 1.0
        tl.store(yhat_out + row, yhat, mask=keep)
        yp = tl.load(y_prev + row, mask=keep, other=0.0)
        y = yhat
        if HAS_ZONE:
            d = tl.load(zone + row, mask=keep, other=0.0)
            y = d * yp + (1.0 - d) * yhat
        out = y
        if HAS_VALID:
            v = tl.load(valid + b)
            if v == 0:
                y = yp
                out = tl.full([BLOCK], 0.0, yhat.dtype)
        tl.store(y_out + row, y, mask=keep)
        tl.store(Y_out + row, out, mask=keep)

    @triton.jit
    def _tanh_backward_step(  # type: ignore[no-untyped-def]
        dY, dy, yhat, zone, valid, gain, rhat, rstd, dpre, drp, direct, H,
        HAS_VALID: tl.constexpr, HAS_ZONE: tl.constexpr, LN: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """d pre_t = d y^_t (1 - y^_t^2) and the part of d y_{t-1} that does not pass R (zoneout's
        d dy, or all of it on a padded step); with layer norm d rp = (g d pre - mean(g d pre) -
        rhat mean(g d pre rhat)) / sigma, over the row."""
        b = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        row = b * H + cols
        carried = tl.load(dy + row, mask=keep, other=0.0)
        g = carried + tl.load(dY + row, mask=keep, other=0.0)
        through = tl.full([BLOCK], 0.0, g.dtype)
        if HAS_ZONE:
            d = tl.load(zone + row, mask=keep, other=0.0)
            through = d * g
            g = (1.0 - d) * g
        yh = tl.load(yhat + row, mask=keep, other=0.0)
        da = g * (1.0 - yh * yh)
        if HAS_VALID:
            v = tl.load(valid + b)
            if v == 0:  # the state passed through, the output a constant 0
                da = tl.full([BLOCK], 0.0, g.dtype)
                through = carried
        tl.store(dpre + row, da, mask=keep)
        tl.store(direct + row, through, mask=keep)
        if LN:
            gda = tl.load(gain + cols, mask=keep, other=0.0) * da
            xh = tl.load(rhat + row, mask=keep, other=0.0)
            m1 = tl.reduce(gda, 0, _add) / H
            m2 = tl.reduce(gda * xh, 0, _add) / H
            tl.store(drp + row, tl.load(rstd + b) * (gda - m1 - xh * m2), mask=keep)


def _grid(B: int, H: int, whole_row: bool = False) -> tuple[tuple[int, int], int]:
    """The grid and BLOCK: (row b, block of units), or one program per row (row statistics)."""
    if whole_row:
        return (B, 1), triton.next_power_of_2(H)
    return (B, triton.cdiv(H, _block(H))), _block(H)


def _flags(valid: Tensor, rmask: Tensor) -> tuple[bool, bool, Tensor]:
    """Whether lengths and a recurrent mask are given, and valid as int8 (the kernels' type)."""
    has_valid, has_mask = valid.numel() > 0, rmask.numel() > 0
    return has_valid, has_mask, (valid.to(torch.int8).contiguous() if has_valid else valid)


def _previous(first: Tensor, states: Tensor, rmask: Tensor) -> Tensor:
    """The recurrent inputs of all steps, (T*B, H): (s_{t-1} m) with s_{-1} = first."""
    prev = torch.cat([first[None], states[:-1]])
    if rmask.numel() > 0:
        prev = prev * rmask
    return prev.reshape(-1, prev.shape[-1])


# --- tanh ---------------------------------------------------------------------------------------
class _TanhFunction(torch.autograd.Function):
    """The tanh RNN; ``gain`` (H) given: layer norm of the recurrent product."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x_proj: Tensor, weight_hh: Tensor, y0: Tensor, valid: Tensor, rmask: Tensor,
        zone: Tensor, gain: Tensor,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        T, B, H = x_proj.shape
        has_valid, has_mask, v8 = _flags(valid, rmask)
        has_zone, ln = zone.numel() > 0, gain.numel() > 0
        e = x_proj.new_empty(0)
        Y, states, Yhat = (x_proj.new_empty(T, B, H) for _ in range(3))
        rhat = x_proj.new_empty(T, B, H) if ln else e
        rstd = x_proj.new_empty(T, B) if ln else e
        pre = x_proj.new_empty(B, H)
        grid, block = _grid(B, H, ln)
        R_t, y = weight_hh.t(), y0.contiguous()
        for t in range(T):
            r_in = y * rmask if has_mask else y
            if ln:  # y R^T alone, normalised in the kernel; x_proj_t read there
                torch.mm(r_in, R_t, out=pre)
            else:
                torch.addmm(x_proj[t], r_in, R_t, out=pre)
            _tanh_forward_step[grid](
                x_proj[t] if ln else pre, pre, gain, y, v8[t] if has_valid else v8,
                zone[t] if has_zone else zone, Yhat[t], rhat[t] if ln else e,
                rstd[t] if ln else e, states[t], Y[t], H, HAS_VALID=has_valid,
                HAS_ZONE=has_zone, LN=ln, BLOCK=block,
            )  # fmt: skip
            y = states[t]
        ctx.save_for_backward(weight_hh, y0, v8, rmask, zone, gain, states, Yhat, rhat, rstd)
        return Y, y.clone()

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, dY: Tensor | None, dyT: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        weight_hh, y0, v8, rmask, zone, gain, states, Yhat, rhat, rstd = ctx.saved_tensors
        T, B, H = states.shape
        has_valid, has_mask, has_zone, ln = (v8.numel() > 0, rmask.numel() > 0,
                                             zone.numel() > 0, gain.numel() > 0)  # fmt: skip
        e = states.new_empty(0)
        dY = torch.zeros_like(states) if dY is None else dY.contiguous()
        dy = torch.zeros_like(y0) if dyT is None else dyT.contiguous().clone()
        dpre = states.new_empty(T, B, H)  # = d x_proj
        drp = states.new_empty(T, B, H) if ln else e  # d (y_{t-1} R^T)
        direct = torch.empty_like(dy)
        grid, block = _grid(B, H, ln)
        d_rec = drp if ln else dpre
        for t in range(T - 1, -1, -1):
            _tanh_backward_step[grid](
                dY[t], dy, Yhat[t], zone[t] if has_zone else zone, v8[t] if has_valid else v8,
                gain, rhat[t] if ln else e, rstd[t] if ln else e, dpre[t],
                drp[t] if ln else e, direct, H, HAS_VALID=has_valid, HAS_ZONE=has_zone, LN=ln,
                BLOCK=block,
            )  # fmt: skip
            through = d_rec[t] @ weight_hh
            dy = direct + (through * rmask if has_mask else through)
        d_weight = d_rec.reshape(T * B, H).t() @ _previous(y0, states, rmask)
        d_gain = (dpre * rhat).sum((0, 1)) if ln else None
        return dpre, d_weight, dy, None, None, None, d_gain


def tanh_sequence(
    cell: Any, x_proj: Tensor, y0: Tensor, valid: Tensor | None, rmask: Tensor | None,
    zone: Tensor | None,
) -> tuple[Tensor, tuple[Tensor, ...]] | None:  # fmt: skip
    """One layer and direction of the tanh RNN: x_proj (T, B, H) -> outputs (T, B, H), (y_T,);
    zone (T, B, H) zoneout's keep masks. None without Triton, with a step normalisation, or
    with layer norm above ``LN_MAX_HIDDEN`` units."""
    ln = cell.options.layer_norm
    if triton is None or cell.step_norms is not None:
        return None
    if ln and cell.hidden_size > LN_MAX_HIDDEN:
        return None
    e = x_proj.new_empty(0)
    Y, yT = _TanhFunction.apply(
        x_proj.contiguous(), cell.weight_hh, y0, e if valid is None else valid,
        e if rmask is None else rmask, e if zone is None else zone.contiguous(),
        cell.ln_hh_weight if ln else e,
    )  # fmt: skip
    return Y, (yT,)


# --- EGRU ---------------------------------------------------------------------------------------
if triton is not None:

    @triton.jit
    def _egru_forward_step(  # type: ignore[no-untyped-def]
        x, rh, theta, c_prev, y_prev, valid, acts, y_out, c_out, Y_out, H,
        HAS_VALID: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """u, r, z, c^ = u c_{t-1} + (1 - u) z, e = H(c^ - theta), y = e c^, c = c^ - e theta;
        x and rh (= y R^T + b') hold rows u, r, z. ``acts`` (B, 5H) gets u, r, z, rh_z, c^."""
        b = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        row3 = b * 3 * H + cols
        u = 1.0 / (1.0 + tl.exp(-(tl.load(x + row3, mask=keep, other=0.0)
                                  + tl.load(rh + row3, mask=keep, other=0.0))))  # fmt: skip
        r = 1.0 / (1.0 + tl.exp(-(tl.load(x + row3 + H, mask=keep, other=0.0)
                                  + tl.load(rh + row3 + H, mask=keep, other=0.0))))  # fmt: skip
        zh = tl.load(rh + row3 + 2 * H, mask=keep, other=0.0)
        z = tl.load(x + row3 + 2 * H, mask=keep, other=0.0) + r * zh
        z = 2.0 / (1.0 + tl.exp(-2.0 * z)) - 1.0
        row = b * H + cols
        cp = tl.load(c_prev + row, mask=keep, other=0.0)
        ch = u * cp + (1.0 - u) * z
        th = tl.load(theta + cols, mask=keep, other=0.0)
        e = tl.where(ch - th > 0.0, 1.0, 0.0)  # H(0) = 0
        y = e * ch  # NaN where c^ is, as the step's
        c = ch - e * th
        out = y
        if HAS_VALID:
            v = tl.load(valid + b)
            if v == 0:
                y = tl.load(y_prev + row, mask=keep, other=0.0)
                c = cp
                out = tl.full([BLOCK], 0.0, ch.dtype)
        base = b * 5 * H + cols
        tl.store(acts + base, u, mask=keep)
        tl.store(acts + base + H, r, mask=keep)
        tl.store(acts + base + 2 * H, z, mask=keep)
        tl.store(acts + base + 3 * H, zh, mask=keep)
        tl.store(acts + base + 4 * H, ch, mask=keep)
        tl.store(y_out + row, y, mask=keep)
        tl.store(c_out + row, c, mask=keep)
        tl.store(Y_out + row, out, mask=keep)

    @triton.jit
    def _egru_backward_step(  # type: ignore[no-untyped-def]
        dY, dy, dc, acts, c_prev, theta, shape, valid, dx, dp, dc_prev, direct, dtheta, H,
        HAS_VALID: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """From d y_t, d c_t: d x_t (rows u, r, z) into ``dx``, d rh_t into ``dp`` (the z row
        times r), d c_{t-1}, theta's share of the step into ``dtheta``, and the part of
        d y_{t-1} that does not pass R (all of it on a padded step, none otherwise). ``shape``
        holds the pseudo-derivative's dampening and support: d e / d v := dampening
        max(0, 1 - support |v|), v = c^ - theta."""
        b = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        row = b * H + cols
        carried = tl.load(dy + row, mask=keep, other=0.0)
        gy = carried + tl.load(dY + row, mask=keep, other=0.0)
        gc = tl.load(dc + row, mask=keep, other=0.0)
        base = b * 5 * H + cols
        u = tl.load(acts + base, mask=keep, other=0.0)
        r = tl.load(acts + base + H, mask=keep, other=0.0)
        z = tl.load(acts + base + 2 * H, mask=keep, other=0.0)
        zh = tl.load(acts + base + 3 * H, mask=keep, other=0.0)
        ch = tl.load(acts + base + 4 * H, mask=keep, other=0.0)
        th = tl.load(theta + cols, mask=keep, other=0.0)
        v = ch - th
        e = tl.where(v > 0.0, 1.0, 0.0)
        slope = 1.0 - tl.load(shape + 1) * tl.where(v < 0.0, -v, v)
        dv = (gy * ch - gc * th) * (tl.load(shape) * tl.where(slope > 0.0, slope, 0.0))
        dch = gy * e + gc + dv  # y = e c^, c = c^ - e theta
        d_theta = -(gc * e + dv)
        cp = tl.load(c_prev + row, mask=keep, other=0.0)
        dpu = dch * (cp - z) * u * (1.0 - u)  # c^ = u c_{t-1} + (1 - u) z
        dzp = dch * (1.0 - u) * (1.0 - z * z)
        dpr = dzp * zh * r * (1.0 - r)
        gcp = dch * u
        dzr = dzp * r
        through = tl.full([BLOCK], 0.0, gy.dtype)
        if HAS_VALID:
            valid_b = tl.load(valid + b)
            if valid_b == 0:  # padding: the state passed through, the output a constant 0
                dpu = through
                dpr = through
                dzp = through
                dzr = through
                d_theta = through
                gcp = gc
                through = carried
        row3 = b * 3 * H + cols
        tl.store(dx + row3, dpu, mask=keep)
        tl.store(dx + row3 + H, dpr, mask=keep)
        tl.store(dx + row3 + 2 * H, dzp, mask=keep)
        tl.store(dp + row3, dpu, mask=keep)
        tl.store(dp + row3 + H, dpr, mask=keep)
        tl.store(dp + row3 + 2 * H, dzr, mask=keep)
        tl.store(dc_prev + row, gcp, mask=keep)
        tl.store(direct + row, through, mask=keep)
        tl.store(dtheta + row, d_theta, mask=keep)


class _EGRUFunction(torch.autograd.Function):
    """EGRU: x_proj (T, B, 3H) rows u, r, z; weight_hh (3H, H), bias_hh (3H), theta (H) clamped;
    ``shape`` (2,) the pseudo-derivative's dampening and support."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x_proj: Tensor, weight_hh: Tensor, bias_hh: Tensor, theta: Tensor, y0: Tensor,
        c0: Tensor, valid: Tensor, rmask: Tensor, shape: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        T, B, GH = x_proj.shape
        H = GH // 3
        has_valid, has_mask, v8 = _flags(valid, rmask)
        Y, states_y, C = (x_proj.new_empty(T, B, H) for _ in range(3))
        acts = x_proj.new_empty(T, B, 5 * H)  # u, r, z, rh_z, c^
        rh = x_proj.new_empty(B, GH)
        grid, block = _grid(B, H)
        R_t, y, c = weight_hh.t(), y0.contiguous(), c0.contiguous()
        for t in range(T):
            torch.addmm(bias_hh, y * rmask if has_mask else y, R_t, out=rh)
            _egru_forward_step[grid](
                x_proj[t], rh, theta, c, y, v8[t] if has_valid else v8, acts[t], states_y[t],
                C[t], Y[t], H, HAS_VALID=has_valid, BLOCK=block,
            )  # fmt: skip
            y, c = states_y[t], C[t]
        ctx.save_for_backward(weight_hh, theta, y0, c0, v8, rmask, shape, states_y, C, acts)
        return Y, y.clone(), c.clone()

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, dY: Tensor | None, dyT: Tensor | None, dcT: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        weight_hh, theta, y0, c0, v8, rmask, shape, states_y, C, acts = ctx.saved_tensors
        T, B, H = states_y.shape
        has_valid, has_mask = v8.numel() > 0, rmask.numel() > 0
        dY = torch.zeros_like(states_y) if dY is None else dY.contiguous()
        dy = torch.zeros_like(y0) if dyT is None else dyT.contiguous().clone()
        dc = torch.zeros_like(c0) if dcT is None else dcT.contiguous().clone()
        dx = states_y.new_empty(T, B, 3 * H)  # d x_proj
        dp = states_y.new_empty(T, B, 3 * H)  # d (y_{t-1} R^T + b')
        dtheta = states_y.new_empty(T, B, H)
        direct, dc_prev = torch.empty_like(dy), torch.empty_like(dc)
        grid, block = _grid(B, H)
        for t in range(T - 1, -1, -1):
            _egru_backward_step[grid](
                dY[t], dy, dc, acts[t], C[t - 1] if t > 0 else c0, theta, shape,
                v8[t] if has_valid else v8, dx[t], dp[t], dc_prev, direct, dtheta[t], H,
                HAS_VALID=has_valid, BLOCK=block,
            )  # fmt: skip
            through = dp[t] @ weight_hh
            dy = direct + (through * rmask if has_mask else through)
            dc, dc_prev = dc_prev, dc
        d_weight = dp.reshape(T * B, 3 * H).t() @ _previous(y0, states_y, rmask)
        d_bias = dp.sum((0, 1))
        return dx, d_weight, d_bias, dtheta.sum((0, 1)), dy, dc, None, None, None


def egru_sequence(
    cell: Any, x_proj: Tensor, state: tuple[Tensor, ...], valid: Tensor | None,
    rmask: Tensor | None,
) -> tuple[Tensor, tuple[Tensor, ...], tuple[Tensor, ...]] | None:  # fmt: skip
    """One layer and direction of EGRU: x_proj (T, B, 3H), state (y0, c0) -> outputs (T, B, H),
    (y_T, c_T) and the activity tally (T, B, H) (1 where a unit emitted an event), as the fused
    CPU path returns them. None without Triton or with a step normalisation."""
    if triton is None or cell.step_norms is not None:
        return None
    e = x_proj.new_empty(0)
    shape = torch.tensor([cell.arg("dampening"), cell.arg("support")], dtype=x_proj.dtype,
                         device=x_proj.device)  # fmt: skip
    Y, yT, cT = _EGRUFunction.apply(
        x_proj.contiguous(), cell.weight_hh, cell.bias_hh, cell.threshold.clamp(0.0, 1.0),
        state[0], state[1], e if valid is None else valid, e if rmask is None else rmask, shape,
    )  # fmt: skip
    return Y, (yT, cT), ((Y != 0).to(Y.dtype),)


# --- NC-GRU -------------------------------------------------------------------------------------
if triton is not None:

    @triton.jit
    def _ncgru_forward_step(  # type: ignore[no-untyped-def]
        x, rh, b_c, h_prev, valid, acts, h_out, Y_out, H,
        HAS_VALID: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """r, u, a = x_c + r (W_c h), c = sign(a) max(0, |a| + b_c), h = u h_{t-1} + (1 - u) c;
        x and rh (= h [R_r; R_u; W_c]^T) hold rows r, u, c. ``acts`` (B, 5H) gets r, u, c,
        W_c h and a."""
        b = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        row3 = b * 3 * H + cols
        r = 1.0 / (1.0 + tl.exp(-(tl.load(x + row3, mask=keep, other=0.0)
                                  + tl.load(rh + row3, mask=keep, other=0.0))))  # fmt: skip
        u = 1.0 / (1.0 + tl.exp(-(tl.load(x + row3 + H, mask=keep, other=0.0)
                                  + tl.load(rh + row3 + H, mask=keep, other=0.0))))  # fmt: skip
        wc = tl.load(rh + row3 + 2 * H, mask=keep, other=0.0)
        a = tl.load(x + row3 + 2 * H, mask=keep, other=0.0) + r * wc
        m = tl.where(a < 0.0, -a, a) + tl.load(b_c + cols, mask=keep, other=0.0)
        sign = tl.where(a > 0.0, 1.0, tl.where(a < 0.0, -1.0, 0.0))
        c = tl.where(m > 0.0, sign * m, 0.0)
        row = b * H + cols
        hp = tl.load(h_prev + row, mask=keep, other=0.0)
        h = u * hp + (1.0 - u) * c
        out = h
        if HAS_VALID:
            v = tl.load(valid + b)
            if v == 0:
                h = hp
                out = tl.full([BLOCK], 0.0, a.dtype)
        base = b * 5 * H + cols
        tl.store(acts + base, r, mask=keep)
        tl.store(acts + base + H, u, mask=keep)
        tl.store(acts + base + 2 * H, c, mask=keep)
        tl.store(acts + base + 3 * H, wc, mask=keep)
        tl.store(acts + base + 4 * H, a, mask=keep)
        tl.store(h_out + row, h, mask=keep)
        tl.store(Y_out + row, out, mask=keep)

    @triton.jit
    def _ncgru_backward_step(  # type: ignore[no-untyped-def]
        dY, dh, acts, b_c, h_prev, valid, dx, dp, direct, H,
        HAS_VALID: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """From d h_t: d x_t (rows r, u, c) into ``dx``, d (h [R_r; R_u; W_c]^T) into ``dp`` (the
        c row times r) and the part of d h_{t-1} that does not pass the product, u d h_t (all
        of d h_t on a padded step)."""
        b = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        row = b * H + cols
        carried = tl.load(dh + row, mask=keep, other=0.0)
        g = carried + tl.load(dY + row, mask=keep, other=0.0)
        base = b * 5 * H + cols
        r = tl.load(acts + base, mask=keep, other=0.0)
        u = tl.load(acts + base + H, mask=keep, other=0.0)
        c = tl.load(acts + base + 2 * H, mask=keep, other=0.0)
        wc = tl.load(acts + base + 3 * H, mask=keep, other=0.0)
        a = tl.load(acts + base + 4 * H, mask=keep, other=0.0)
        hp = tl.load(h_prev + row, mask=keep, other=0.0)
        # d modReLU / d a = sign(a)^2 where |a| + b_c > 0, else 0 (and 0 at a = 0)
        m = tl.where(a < 0.0, -a, a) + tl.load(b_c + cols, mask=keep, other=0.0)
        da = tl.where((m > 0.0) & (a != 0.0), g * (1.0 - u), 0.0)
        dpr = da * wc * r * (1.0 - r)
        dpu = g * (hp - c) * u * (1.0 - u)
        dar = da * r
        through = g * u
        if HAS_VALID:
            v = tl.load(valid + b)
            if v == 0:  # padding: the state passed through, the output a constant 0
                da = tl.full([BLOCK], 0.0, g.dtype)
                dpr = da
                dpu = da
                dar = da
                through = carried
        row3 = b * 3 * H + cols
        tl.store(dx + row3, dpr, mask=keep)
        tl.store(dx + row3 + H, dpu, mask=keep)
        tl.store(dx + row3 + 2 * H, da, mask=keep)
        tl.store(dp + row3, dpr, mask=keep)
        tl.store(dp + row3 + H, dpu, mask=keep)
        tl.store(dp + row3 + 2 * H, dar, mask=keep)
        tl.store(direct + row, through, mask=keep)


class _NCGRUFunction(torch.autograd.Function):
    """NC-GRU: x_proj (T, B, 3H) rows r, u, c; weight (3H, H) the stacked [R_r; R_u; W_c]
    (its gradient goes back to R and, by autograd, through the Cayley map); modReLU's b_c (H)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x_proj: Tensor, weight: Tensor, b_c: Tensor, h0: Tensor, valid: Tensor,
        rmask: Tensor,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        T, B, GH = x_proj.shape
        H = GH // 3
        has_valid, has_mask, v8 = _flags(valid, rmask)
        Y, states = x_proj.new_empty(T, B, H), x_proj.new_empty(T, B, H)
        acts = x_proj.new_empty(T, B, 5 * H)  # r, u, c, W_c h, a
        rh = x_proj.new_empty(B, GH)
        grid, block = _grid(B, H)
        W_t, h = weight.t(), h0.contiguous()
        for t in range(T):
            torch.mm(h * rmask if has_mask else h, W_t, out=rh)
            _ncgru_forward_step[grid](
                x_proj[t], rh, b_c, h, v8[t] if has_valid else v8, acts[t], states[t], Y[t], H,
                HAS_VALID=has_valid, BLOCK=block,
            )  # fmt: skip
            h = states[t]
        ctx.save_for_backward(weight, b_c, h0, v8, rmask, states, acts)
        return Y, h.clone()

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, dY: Tensor | None, dhT: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        weight, b_c, h0, v8, rmask, states, acts = ctx.saved_tensors
        T, B, H = states.shape
        has_valid, has_mask = v8.numel() > 0, rmask.numel() > 0
        dY = torch.zeros_like(states) if dY is None else dY.contiguous()
        dh = torch.zeros_like(h0) if dhT is None else dhT.contiguous().clone()
        dx = states.new_empty(T, B, 3 * H)  # d x_proj
        dp = states.new_empty(T, B, 3 * H)  # d (h_{t-1} [R_r; R_u; W_c]^T)
        direct = torch.empty_like(dh)
        grid, block = _grid(B, H)
        for t in range(T - 1, -1, -1):
            _ncgru_backward_step[grid](
                dY[t], dh, acts[t], b_c, states[t - 1] if t > 0 else h0,
                v8[t] if has_valid else v8, dx[t], dp[t], direct, H, HAS_VALID=has_valid,
                BLOCK=block,
            )  # fmt: skip
            through = dp[t] @ weight
            dh = direct + (through * rmask if has_mask else through)
        d_weight = dp.reshape(T * B, 3 * H).t() @ _previous(h0, states, rmask)
        # d b_c = d c where modReLU passes, = d a sign(a) (d a = 0 where it does not)
        d_bc = (dx[..., 2 * H :] * torch.sign(acts[..., 4 * H :])).sum((0, 1))
        return dx, d_weight, d_bc, dh, None, None


def ncgru_sequence(
    cell: Any, x_proj: Tensor, weight: Tensor, h0: Tensor, valid: Tensor | None,
    rmask: Tensor | None,
) -> tuple[Tensor, tuple[Tensor, ...]] | None:  # fmt: skip
    """One layer and direction of NC-GRU: x_proj (T, B, 3H) rows r, u, c, weight (3H, H) the
    stacked [R_r; R_u; W_c] -> outputs (T, B, H), (h_T,). None without Triton or with a step
    normalisation."""
    if triton is None or cell.step_norms is not None:
        return None
    e = x_proj.new_empty(0)
    Y, hT = _NCGRUFunction.apply(
        x_proj.contiguous(), weight, cell.modrelu_bias, h0, e if valid is None else valid,
        e if rmask is None else rmask,
    )  # fmt: skip
    return Y, (hT,)


# --- GateL0RD's latent --------------------------------------------------------------------------
if triton is not None:

    @triton.jit
    def _gatel0rd_forward_step(  # type: ignore[no-untyped-def]
        x, gh, noise, h_prev, L_prev, valid, rec_out, L_out, h_out, H,
        HAS_NOISE: tl.constexpr, HAS_VALID: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """L = max(0, tanh(x_g + g_g - noise)), rec = tanh(x_r + g_r), h = L rec + (1 - L) h_{t-1};
        x and gh (= h_{t-1} [R_g; R_r]^T) hold rows g, r. A padded step keeps h and L."""
        b = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        row2 = b * 2 * H + cols
        row = b * H + cols
        s = tl.load(x + row2, mask=keep, other=0.0) + tl.load(gh + row2, mask=keep, other=0.0)
        if HAS_NOISE:
            s -= tl.load(noise + row, mask=keep, other=0.0)
        L = 2.0 / (1.0 + tl.exp(-2.0 * s)) - 1.0
        L = tl.where(L > 0.0, L, 0.0)  # ReTanh
        rec = tl.load(x + row2 + H, mask=keep, other=0.0)
        rec += tl.load(gh + row2 + H, mask=keep, other=0.0)
        rec = 2.0 / (1.0 + tl.exp(-2.0 * rec)) - 1.0
        hp = tl.load(h_prev + row, mask=keep, other=0.0)
        h = L * rec + (1.0 - L) * hp
        if HAS_VALID:
            v = tl.load(valid + b)
            if v == 0:
                h = hp
                L = tl.load(L_prev + row, mask=keep, other=0.0)
        tl.store(rec_out + row, rec, mask=keep)
        tl.store(L_out + row, L, mask=keep)
        tl.store(h_out + row, h, mask=keep)

    @triton.jit
    def _gatel0rd_backward_step(  # type: ignore[no-untyped-def]
        dHs, dLs, dh, dL, L_t, rec, h_prev, valid, dx, direct, H,
        HAS_VALID: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """From d h_t (carried ``dh`` and the outputs' ``dHs``) and d L_t (``dLs``, and ``dL``
        carried over padding): d x_t (rows g, r; also d (h_{t-1} R^T)), the part of
        d h_{t-1} that does not pass R, (1 - L) d h_t, and ``dL`` for L_{t-1} (0: the gate of a
        step is no input of the next; all of it on a padded step, which carries L)."""
        b = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        row = b * H + cols
        gh = tl.load(dh + row, mask=keep, other=0.0) + tl.load(dHs + row, mask=keep, other=0.0)
        gL_in = tl.load(dL + row, mask=keep, other=0.0) + tl.load(dLs + row, mask=keep, other=0.0)
        L = tl.load(L_t + row, mask=keep, other=0.0)
        rk = tl.load(rec + row, mask=keep, other=0.0)
        hp = tl.load(h_prev + row, mask=keep, other=0.0)
        gL = gL_in + gh * (rk - hp)  # h = L rec + (1 - L) h_{t-1}
        ds = tl.where(L > 0.0, gL * (1.0 - L * L), 0.0)  # L = max(0, tanh(s))
        dr = gh * L * (1.0 - rk * rk)
        through = gh * (1.0 - L)
        dL_prev = tl.full([BLOCK], 0.0, gh.dtype)
        if HAS_VALID:
            v = tl.load(valid + b)
            if v == 0:
                ds = dL_prev
                dr = dL_prev
                through = gh
                dL_prev = gL_in
        tl.store(dx + b * 2 * H + cols, ds, mask=keep)
        tl.store(dx + b * 2 * H + H + cols, dr, mask=keep)
        tl.store(direct + row, through, mask=keep)
        tl.store(dL + row, dL_prev, mask=keep)


class _GateL0RDFunction(torch.autograd.Function):
    """GateL0RD's latent: x_gr (T, B, 2H) rows g, r, weight_hh (2H, H), noise (T, B, H) sigma
    eps_t (or empty) -> h and L after every step (T, B, H) each, both carried over padding."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x_gr: Tensor, weight_hh: Tensor, h0: Tensor, L0: Tensor, noise: Tensor,
        valid: Tensor,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        T, B, GH = x_gr.shape
        H = GH // 2
        has_valid, _, v8 = _flags(valid, valid.new_empty(0))
        has_noise = noise.numel() > 0
        Hs, Ls, rec = (x_gr.new_empty(T, B, H) for _ in range(3))
        gh = x_gr.new_empty(B, GH)
        grid, block = _grid(B, H)
        R_t, h, L = weight_hh.t(), h0.contiguous(), L0.contiguous()
        for t in range(T):
            torch.mm(h, R_t, out=gh)
            _gatel0rd_forward_step[grid](
                x_gr[t], gh, noise[t] if has_noise else noise, h, L,
                v8[t] if has_valid else v8, rec[t], Ls[t], Hs[t], H, HAS_NOISE=has_noise,
                HAS_VALID=has_valid, BLOCK=block,
            )  # fmt: skip
            h, L = Hs[t], Ls[t]
        ctx.save_for_backward(weight_hh, h0, v8, Hs, Ls, rec)
        return Hs, Ls

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, dHs: Tensor | None, dLs: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        weight_hh, h0, v8, Hs, Ls, rec = ctx.saved_tensors
        T, B, H = Hs.shape
        has_valid = v8.numel() > 0
        dHs = torch.zeros_like(Hs) if dHs is None else dHs.contiguous()
        dLs = torch.zeros_like(Ls) if dLs is None else dLs.contiguous()
        dx = Hs.new_empty(T, B, 2 * H)  # d x_gr, and d (h_{t-1} R^T)
        dh, dL, direct = torch.zeros_like(h0), torch.zeros_like(h0), torch.empty_like(h0)
        grid, block = _grid(B, H)
        for t in range(T - 1, -1, -1):
            _gatel0rd_backward_step[grid](
                dHs[t], dLs[t], dh, dL, Ls[t], rec[t], Hs[t - 1] if t > 0 else h0,
                v8[t] if has_valid else v8, dx[t], direct, H, HAS_VALID=has_valid, BLOCK=block,
            )  # fmt: skip
            dh = direct + dx[t] @ weight_hh
        d_weight = dx.reshape(T * B, 2 * H).t() @ _previous(h0, Hs, h0.new_empty(0))
        return dx, d_weight, dh, dL, None, None


def gatel0rd_latent(
    x_gr: Tensor, weight_hh: Tensor, h0: Tensor, L0: Tensor, noise: Tensor | None,
    valid: Tensor | None,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """GateL0RD's latent recurrence, as ``kernels.cpu.gatel0rd_latent``: x_gr (T, B, 2H) the
    gate and recommendation rows, noise (T, B, H) sigma eps_t or None -> (h, L) (T, B, H)
    after every step, both carried over padded steps (the caller forms the outputs from h)."""
    e = x_gr.new_empty(0)
    Hs, Ls = _GateL0RDFunction.apply(
        x_gr.contiguous(), weight_hh, h0, L0, e if noise is None else noise.contiguous(),
        e if valid is None else valid,
    )  # fmt: skip
    return Hs, Ls
