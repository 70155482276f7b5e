"""The LSTM family on a GPU: the gate arithmetic of each step fused into Triton kernels beside
the recurrent products (cuBLAS), as haste and cuDNN do. (Both GRUs are ``gpu_gru``'s, on the
same scheme and helpers.)

Forward, per step t: ``pre = x_proj[t] + (y_{t-1} * mask) R^T`` (one ``addmm``), then one kernel
computes every gate of the variant, c_t and y_t, keeps the state over padded steps and writes
the activations the backward needs. Backward, per step in reverse: one kernel takes the
gradients of y_t and c_t back through the gates to d pre_t (and to c_{t-1}), then one product
``d pre_t R`` carries the gradient to y_{t-1}. The weight gradients are single large products
after the loop: dR = sum_t d pre_t^T (y_{t-1} * mask), the peepholes' as reductions, and
d x_proj = d pre (the input projection's own products are autograd's, outside).

Covered: every LSTM variant (FGR's gate-to-gate product a_{t-1} W_gg^T is one more product per
step, added into the i, f, o blocks) with peepholes and zoneout (the keep masks of y and c; the
cell's own c^_t saved beside the zoned c_t), with ``lengths`` and recurrent dropout; also with
layer norm (Ba et al. 2016, as the cell has it; zoneout and recurrent dropout as above):
LN(W x) + b is the input projection's, once for all steps outside the loop; per step the
product is ``mm`` alone, y_{t-1} R^T, and the kernel (one program per batch row, BLOCK >= H)
normalises it over all G*H units, gain g_r, adds x_proj_t, and takes h of g_c LN(c_t) + b_c,
saving both normalised rows and their 1/sigma; the backward kernel goes back through both
normalisations with the same row sums, and the gains' and c's bias's gradients are sums after
the loop. One program per row bounds the width: above ``LN_MAX_HIDDEN`` (2048) units the step
loop runs.
Not covered (the step loop runs): a step normalisation (``norm``). ``lstm`` without layer
norm runs cuDNN instead (``kernels.torchrnn``).

No GPU has been lent to this project: these kernels are tested on the CPU in Triton's
interpreter (``TRITON_INTERPRET=1``, ``tests/test_gpu_kernels.py``) against the step loop, in
float64 with gradients, and their speed on a GPU has not been measured.

The equations (the cell's, ``rnnlab.cells.lstm``), with absent gates fixed to 1:
z = tanh(z~) (or z~), i = s(i~ + p_i c_{t-1}), f = s(f~ + p_f c_{t-1}) (or 1 - i, coupled),
c = i z + f c_{t-1}, o = s(o~ + p_o c), h = tanh(c) (or c), y = o h.
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
    # Only Triton's builtins (tl.exp, tl.full; not tl.sigmoid or tl.zeros, @triton.jit functions):
    # a kernel defined after torch imported Triton then runs in the interpreter as a whole (the
    # interpreter patches the kernel, not the library's jitted callees, decorated at import).
    # sigmoid(x) = 1 / (1 + exp(-x)), tanh(x) = 2 sigmoid(2x) - 1.
    # Row sums (layer norm) are tl.reduce with this combiner (tl.sum is a jitted library
    # function): the interpreter calls a combiner's Python function itself.
    @triton.jit
    def _add(a, b):  # type: ignore[no-untyped-def]
        return a + b

    @triton.jit
    def _lstm_forward_step(  # type: ignore[no-untyped-def]
        pre, rp, ln_r, ln_cw, ln_cb, c_prev, y_prev, peep, valid, zone, y_out, c_out, chat_out,
        acts, rhat_out, cn_out, stats, Y_out, H, GH,
        OFF_I: tl.constexpr, OFF_F: tl.constexpr, OFF_Z: tl.constexpr, OFF_O: tl.constexpr,
        P_I: tl.constexpr, P_F: tl.constexpr, P_O: tl.constexpr, COUPLED: tl.constexpr,
        IN_ACT: tl.constexpr, OUT_ACT: tl.constexpr, HAS_VALID: tl.constexpr,
        HAS_ZONE: tl.constexpr, LN: tl.constexpr, BLOCK: tl.constexpr, BLOCK_G: tl.constexpr,
    ):  # fmt: skip
        """One step of one batch row b (program 0) and BLOCK units (program 1). With zoneout,
        ``zone`` (B, 2H) holds the keep masks d of y and c (or p in evaluation): the state is
        d s_{t-1} + (1 - d) s^_t, the cell's own c^_t kept in ``chat_out`` for the backward.

        With layer norm (``LN``; one program per row: BLOCK >= H, BLOCK_G >= G*H), ``pre`` is
        x_proj_t (normalised outside) and ``rp`` = y_{t-1} R^T (B, G*H): the kernel adds
        g_r LN(rp) (over all G*H), and h takes g_c LN(c_t) + b_c; it writes LN(rp) without its
        gain to ``rhat_out``, LN(c_t) likewise to ``cn_out`` and the two 1/sigma to ``stats``
        (B, 2)."""
        b = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        row = b * GH
        if LN:  # the statistics of y R^T over the whole row, two passes
            gcols = tl.arange(0, BLOCK_G)
            gkeep = gcols < GH
            r_all = tl.load(rp + row + gcols, mask=gkeep, other=0.0)
            mean_r = tl.reduce(r_all, 0, _add) / GH
            dev_r = tl.where(gkeep, r_all - mean_r, 0.0)
            rstd_r = 1.0 / tl.sqrt(tl.reduce(dev_r * dev_r, 0, _add) / GH + 1e-5)
            tl.store(rhat_out + row + gcols, dev_r * rstd_r, mask=gkeep)
            tl.store(stats + b * 2, rstd_r)
        cp = tl.load(c_prev + b * H + cols, mask=keep, other=0.0)
        zt = tl.load(pre + row + OFF_Z * H + cols, mask=keep, other=0.0)
        if LN:
            zt += (
                tl.load(ln_r + OFF_Z * H + cols, mask=keep, other=0.0)
                * (tl.load(rp + row + OFF_Z * H + cols, mask=keep, other=0.0) - mean_r) * rstd_r
            )  # fmt: skip
        if IN_ACT:
            zt = 2.0 / (1.0 + tl.exp(-2.0 * zt)) - 1.0
        if OFF_I >= 0:
            it = tl.load(pre + row + OFF_I * H + cols, mask=keep, other=0.0)
            if LN:
                it += (
                    tl.load(ln_r + OFF_I * H + cols, mask=keep, other=0.0)
                    * (tl.load(rp + row + OFF_I * H + cols, mask=keep, other=0.0) - mean_r)
                    * rstd_r
                )  # fmt: skip
            if P_I >= 0:
                it += tl.load(peep + P_I * H + cols, mask=keep, other=0.0) * cp
            it = 1.0 / (1.0 + tl.exp(-it))
        else:
            it = tl.full([BLOCK], 1.0, zt.dtype)
        if COUPLED:
            ft = 1.0 - it
        elif OFF_F >= 0:
            ft = tl.load(pre + row + OFF_F * H + cols, mask=keep, other=0.0)
            if LN:
                ft += (
                    tl.load(ln_r + OFF_F * H + cols, mask=keep, other=0.0)
                    * (tl.load(rp + row + OFF_F * H + cols, mask=keep, other=0.0) - mean_r)
                    * rstd_r
                )  # fmt: skip
            if P_F >= 0:
                ft += tl.load(peep + P_F * H + cols, mask=keep, other=0.0) * cp
            ft = 1.0 / (1.0 + tl.exp(-ft))
        else:
            ft = tl.full([BLOCK], 1.0, zt.dtype)
        ct = it * zt + ft * cp
        if OFF_O >= 0:
            ot = tl.load(pre + row + OFF_O * H + cols, mask=keep, other=0.0)
            if LN:
                ot += (
                    tl.load(ln_r + OFF_O * H + cols, mask=keep, other=0.0)
                    * (tl.load(rp + row + OFF_O * H + cols, mask=keep, other=0.0) - mean_r)
                    * rstd_r
                )  # fmt: skip
            if P_O >= 0:
                ot += tl.load(peep + P_O * H + cols, mask=keep, other=0.0) * ct
            ot = 1.0 / (1.0 + tl.exp(-ot))
        else:
            ot = tl.full([BLOCK], 1.0, zt.dtype)
        c_seen = ct  # what h sees: c_t, or g_c LN(c_t) + b_c (the peephole p_o sees c_t)
        if LN:
            mean_c = tl.reduce(tl.where(keep, ct, 0.0), 0, _add) / H
            dev_c = tl.where(keep, ct - mean_c, 0.0)
            rstd_c = 1.0 / tl.sqrt(tl.reduce(dev_c * dev_c, 0, _add) / H + 1e-5)
            tl.store(cn_out + b * H + cols, dev_c * rstd_c, mask=keep)
            tl.store(stats + b * 2 + 1, rstd_c)
            c_seen = dev_c * rstd_c * tl.load(ln_cw + cols, mask=keep, other=0.0)
            c_seen += tl.load(ln_cb + cols, mask=keep, other=0.0)
        ht = c_seen
        if OUT_ACT:
            ht = 2.0 / (1.0 + tl.exp(-2.0 * c_seen)) - 1.0
        yt = ot * ht
        if HAS_ZONE:
            tl.store(chat_out + b * H + cols, ct, mask=keep)
            d_y = tl.load(zone + b * 2 * H + cols, mask=keep, other=0.0)
            d_c = tl.load(zone + b * 2 * H + H + cols, mask=keep, other=0.0)
            yp = tl.load(y_prev + b * H + cols, mask=keep, other=0.0)
            yt = d_y * yp + (1.0 - d_y) * yt
            ct = d_c * cp + (1.0 - d_c) * ct
        out = yt
        if HAS_VALID:
            v = tl.load(valid + b)
            if v == 0:
                ct = cp
                yt = tl.load(y_prev + b * H + cols, mask=keep, other=0.0)
                out = tl.full([BLOCK], 0.0, zt.dtype)
        base = b * 4 * H
        tl.store(acts + base + cols, it, mask=keep)
        tl.store(acts + base + H + cols, ft, mask=keep)
        tl.store(acts + base + 2 * H + cols, zt, mask=keep)
        tl.store(acts + base + 3 * H + cols, ot, mask=keep)
        tl.store(c_out + b * H + cols, ct, mask=keep)
        tl.store(y_out + b * H + cols, yt, mask=keep)
        tl.store(Y_out + b * H + cols, out, mask=keep)

    @triton.jit
    def _lstm_backward_step(  # type: ignore[no-untyped-def]
        dY, dy, dc, da, acts, c_prev, c_t, peep, valid, zone, ln_r, ln_cw, ln_cb, rhat, cn,
        stats, dpre, dy_direct, dc_prev, drp, dc_seen, H, GH,
        OFF_I: tl.constexpr, OFF_F: tl.constexpr, OFF_Z: tl.constexpr, OFF_O: tl.constexpr,
        P_I: tl.constexpr, P_F: tl.constexpr, P_O: tl.constexpr, COUPLED: tl.constexpr,
        IN_ACT: tl.constexpr, OUT_ACT: tl.constexpr, HAS_VALID: tl.constexpr, FGR: tl.constexpr,
        HAS_ZONE: tl.constexpr, LN: tl.constexpr, BLOCK: tl.constexpr, BLOCK_G: tl.constexpr,
    ):  # fmt: skip
        """d pre_t, the part of d y_{t-1} that does not go through R, and d c_{t-1}; with FGR,
        ``da`` (B, 3H) is the gradient of the state a_t = (i, f, o), added to the gates'.

        With layer norm (one program per row), the gradient goes back through LN(c_t) to c_t
        and, after the gates, through LN(y R^T) to ``drp`` = d (y_{t-1} R^T); ``dc_seen`` gets
        the gradient of g_c LN(c_t) + b_c (for the gains' sums after the loop). Both as
        dx = (dx^ - mean(dx^) - x^ mean(dx^ x^)) / sigma, with dx^ = g dout, row by row."""
        b = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        carried = tl.load(dy + b * H + cols, mask=keep, other=0.0)
        gc_in = tl.load(dc + b * H + cols, mask=keep, other=0.0)
        gy_in = carried + tl.load(dY + b * H + cols, mask=keep, other=0.0)
        gy = gy_in
        gc = gc_in
        zoned_y = tl.full([BLOCK], 0.0, gy.dtype)  # what d s_{t-1} takes past the cell
        zoned_c = zoned_y
        if HAS_ZONE:  # c_t here is the cell's own c^_t (the caller passes it)
            d_y = tl.load(zone + b * 2 * H + cols, mask=keep, other=0.0)
            d_c = tl.load(zone + b * 2 * H + H + cols, mask=keep, other=0.0)
            zoned_y = d_y * gy_in
            zoned_c = d_c * gc_in
            gy = (1.0 - d_y) * gy_in
            gc = (1.0 - d_c) * gc_in
        base = b * 4 * H
        it = tl.load(acts + base + cols, mask=keep, other=0.0)
        ft = tl.load(acts + base + H + cols, mask=keep, other=0.0)
        zt = tl.load(acts + base + 2 * H + cols, mask=keep, other=0.0)
        ot = tl.load(acts + base + 3 * H + cols, mask=keep, other=0.0)
        cp = tl.load(c_prev + b * H + cols, mask=keep, other=0.0)
        ct = tl.load(c_t + b * H + cols, mask=keep, other=0.0)
        c_seen = ct
        if LN:
            c_n = tl.load(cn + b * H + cols, mask=keep, other=0.0)
            gain_c = tl.load(ln_cw + cols, mask=keep, other=0.0)
            c_seen = c_n * gain_c + tl.load(ln_cb + cols, mask=keep, other=0.0)
        ht = c_seen
        if OUT_ACT:
            ht = 2.0 / (1.0 + tl.exp(-2.0 * c_seen)) - 1.0
        dh = gy * ot
        d_seen = dh
        if OUT_ACT:
            d_seen = dh * (1.0 - ht * ht)
        if LN:
            dcn = d_seen * gain_c
            m1_c = tl.reduce(dcn, 0, _add) / H
            m2_c = tl.reduce(dcn * c_n, 0, _add) / H
            gct = gc + tl.load(stats + b * 2 + 1) * (dcn - m1_c - c_n * m2_c)
        else:
            gct = gc + d_seen
        do_pre = tl.full([BLOCK], 0.0, ot.dtype)
        ga_i = tl.full([BLOCK], 0.0, ot.dtype)
        ga_f = ga_i
        ga_o = ga_i
        if FGR:
            ga_i = tl.load(da + b * 3 * H + cols, mask=keep, other=0.0)
            ga_f = tl.load(da + b * 3 * H + H + cols, mask=keep, other=0.0)
            ga_o = tl.load(da + b * 3 * H + 2 * H + cols, mask=keep, other=0.0)
        if OFF_O >= 0:
            do_pre = (gy * ht + ga_o) * ot * (1.0 - ot)
            if P_O >= 0:
                gct += do_pre * tl.load(peep + P_O * H + cols, mask=keep, other=0.0)
        dz = gct * it
        if IN_ACT:
            dz = dz * (1.0 - zt * zt)
        di = gct * zt + ga_i
        if COUPLED:
            di -= gct * cp  # f = 1 - i
        di_pre = di * it * (1.0 - it)
        df_pre = (gct * cp + ga_f) * ft * (1.0 - ft)
        gcp = gct * ft
        if (OFF_I >= 0) and (P_I >= 0):
            gcp += di_pre * tl.load(peep + P_I * H + cols, mask=keep, other=0.0)
        if (OFF_F >= 0) and (not COUPLED) and (P_F >= 0):
            gcp += df_pre * tl.load(peep + P_F * H + cols, mask=keep, other=0.0)
        direct = zoned_y
        gcp += zoned_c
        if HAS_VALID:
            v = tl.load(valid + b)
            if v == 0:  # a padded step: the state passed through, the output a constant 0
                dz = tl.full([BLOCK], 0.0, ot.dtype)
                di_pre = dz
                df_pre = dz
                do_pre = dz
                gcp = gc_in
                direct = carried
                d_seen = dz
        row = b * GH
        tl.store(dpre + row + OFF_Z * H + cols, dz, mask=keep)
        if OFF_I >= 0:
            tl.store(dpre + row + OFF_I * H + cols, di_pre, mask=keep)
        if (OFF_F >= 0) and (not COUPLED):
            tl.store(dpre + row + OFF_F * H + cols, df_pre, mask=keep)
        if OFF_O >= 0:
            tl.store(dpre + row + OFF_O * H + cols, do_pre, mask=keep)
        tl.store(dy_direct + b * H + cols, direct, mask=keep)
        tl.store(dc_prev + b * H + cols, gcp, mask=keep)
        if LN:  # back through LN(y R^T): d rhat = g_r d pre over the whole row
            tl.store(dc_seen + b * H + cols, d_seen, mask=keep)
            gz = tl.load(ln_r + OFF_Z * H + cols, mask=keep, other=0.0) * dz
            xz = tl.load(rhat + row + OFF_Z * H + cols, mask=keep, other=0.0)
            s1 = tl.reduce(gz, 0, _add)
            s2 = tl.reduce(gz * xz, 0, _add)
            if OFF_I >= 0:
                gi = tl.load(ln_r + OFF_I * H + cols, mask=keep, other=0.0) * di_pre
                xi = tl.load(rhat + row + OFF_I * H + cols, mask=keep, other=0.0)
                s1 += tl.reduce(gi, 0, _add)
                s2 += tl.reduce(gi * xi, 0, _add)
            if (OFF_F >= 0) and (not COUPLED):
                gf = tl.load(ln_r + OFF_F * H + cols, mask=keep, other=0.0) * df_pre
                xf = tl.load(rhat + row + OFF_F * H + cols, mask=keep, other=0.0)
                s1 += tl.reduce(gf, 0, _add)
                s2 += tl.reduce(gf * xf, 0, _add)
            if OFF_O >= 0:
                go = tl.load(ln_r + OFF_O * H + cols, mask=keep, other=0.0) * do_pre
                xo = tl.load(rhat + row + OFF_O * H + cols, mask=keep, other=0.0)
                s1 += tl.reduce(go, 0, _add)
                s2 += tl.reduce(go * xo, 0, _add)
            m1 = s1 / GH
            m2 = s2 / GH
            rstd_r = tl.load(stats + b * 2)
            tl.store(drp + row + OFF_Z * H + cols, rstd_r * (gz - m1 - xz * m2), mask=keep)
            if OFF_I >= 0:
                tl.store(drp + row + OFF_I * H + cols, rstd_r * (gi - m1 - xi * m2), mask=keep)
            if (OFF_F >= 0) and (not COUPLED):
                tl.store(drp + row + OFF_F * H + cols, rstd_r * (gf - m1 - xf * m2), mask=keep)
            if OFF_O >= 0:
                tl.store(drp + row + OFF_O * H + cols, rstd_r * (go - m1 - xo * m2), mask=keep)


def _block(H: int) -> int:
    return min(256, triton.next_power_of_2(H))


LN_MAX_HIDDEN = 2048  # layer norm: one program holds a whole row (BLOCK_G >= G*H, up to 8192)


def _launch(H: int, GH: int, B: int, ln: bool) -> tuple[tuple[int, int], dict[str, int]]:
    """The grid and block sizes: with layer norm one program per batch row, whose BLOCK covers
    all H units and BLOCK_G all G*H pre-activations (the rows' reductions stay in a program)."""
    if ln:
        return (B, 1), {"BLOCK": triton.next_power_of_2(H), "BLOCK_G": triton.next_power_of_2(GH)}
    return (B, triton.cdiv(H, _block(H))), {"BLOCK": _block(H), "BLOCK_G": 1}


class _LSTMFunction(torch.autograd.Function):
    """The LSTM family; with FGR (``weight_gg`` given) the gates i, f, o also take
    a_{t-1} W_gg^T, a_t = (i_t, f_t, o_t) being a third state part. With layer norm
    (``ln_r`` (G*H), ``ln_cw``, ``ln_cb`` (H) given), pre = x_proj + g_r LN(y R^T) (+ the FGR
    product) and h takes g_c LN(c_t) + b_c."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x_proj: Tensor, weight_hh: Tensor, peephole: Tensor, weight_gg: Tensor,
        y0: Tensor, c0: Tensor, a0: Tensor, valid: Tensor, rmask: Tensor, zone: Tensor,
        ln_r: Tensor, ln_cw: Tensor, ln_cb: Tensor, layout: dict[str, int],
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
        T, B, GH = x_proj.shape
        H = weight_hh.shape[1]
        has_valid, has_mask, fgr = valid.numel() > 0, rmask.numel() > 0, weight_gg.numel() > 0
        has_zone, ln = zone.numel() > 0, ln_r.numel() > 0
        e = x_proj.new_empty(0)
        rp = x_proj.new_empty(B, GH) if ln else e  # y_{t-1} R^T, normalised in the kernel
        rhat = x_proj.new_empty(T, B, GH) if ln else e  # LN(y R^T) before its gain
        cn = x_proj.new_empty(T, B, H) if ln else e  # LN(c_t) before its gain and bias
        stats = x_proj.new_empty(T, B, 2) if ln else e  # the two rows' 1/sigma
        v8 = valid.to(torch.int8).contiguous() if has_valid else valid
        zone = zone.contiguous()
        Chat = x_proj.new_empty(T, B, H) if has_zone else x_proj.new_empty(0)
        Y = x_proj.new_empty(T, B, H)
        states_y = x_proj.new_empty(T, B, H)  # y_t as state (padded rows keep y_{t-1})
        C = x_proj.new_empty(T, B, H)
        acts = x_proj.new_empty(T, B, 4 * H)  # i, f, z, o after their activations
        A = x_proj.new_empty(T, B, 3 * H) if fgr else x_proj.new_empty(0)
        pre = x_proj.new_empty(B, GH)
        gates = [layout["OFF_I"], layout["OFF_F"], layout["OFF_O"]]
        grid, blocks_kw = _launch(H, GH, B, ln)
        # the kernels read rows by arithmetic: the saved initial states must be contiguous too
        y0, c0, a0 = y0.contiguous(), c0.contiguous(), a0.contiguous()
        y, c, a = y0, c0, a0
        R_t = weight_hh.t()
        for t in range(T):
            r_in = y * rmask if has_mask else y
            if ln:  # LN(y R^T) comes in the kernel: x_proj_t (+ FGR's product) stays apart
                torch.mm(r_in, R_t, out=rp)
                pre.copy_(x_proj[t])
            else:
                torch.addmm(x_proj[t], r_in, R_t, out=pre)
            if fgr:  # the gate-to-gate product, into the i, f and o blocks
                blocks = pre.view(B, GH // H, H)
                blocks[:, gates] += (a @ weight_gg.t()).view(B, 3, H)
            _lstm_forward_step[grid](
                pre, rp, ln_r, ln_cw, ln_cb, c, y, peephole, v8[t] if has_valid else v8,
                zone[t] if has_zone else zone, states_y[t], C[t], Chat[t] if has_zone else Chat,
                acts[t], rhat[t] if ln else e, cn[t] if ln else e, stats[t] if ln else e, Y[t],
                H, GH, **layout, HAS_VALID=has_valid, HAS_ZONE=has_zone, LN=ln, **blocks_kw,
            )  # fmt: skip
            if fgr:
                new_a = acts[t].view(B, 4, H)[:, [0, 1, 3]].reshape(B, 3 * H)
                A[t] = torch.where(v8[t, :, None] != 0, new_a, a) if has_valid else new_a
                a = A[t]
            y, c = states_y[t], C[t]
        ctx.save_for_backward(x_proj, weight_hh, peephole, weight_gg, y0, c0, a0, v8, rmask,
                              zone, states_y, C, Chat, acts, A, ln_r, ln_cw, ln_cb, rhat, cn,
                              stats)  # fmt: skip
        ctx.layout = layout
        return Y, y.clone(), c.clone(), (a.clone() if fgr else x_proj.new_empty(0))

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, dY: Tensor | None, dyT: Tensor | None, dcT: Tensor | None, daT: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        (x_proj, weight_hh, peephole, weight_gg, y0, c0, a0, v8, rmask, zone, states_y, C, Chat,
         acts, A, ln_r, ln_cw, ln_cb, rhat, cn, stats) = ctx.saved_tensors  # fmt: skip
        T, B, GH = x_proj.shape
        H = weight_hh.shape[1]
        has_valid, has_mask, fgr = v8.numel() > 0, rmask.numel() > 0, weight_gg.numel() > 0
        has_zone, ln = zone.numel() > 0, ln_r.numel() > 0
        e = x_proj.new_empty(0)
        drp = x_proj.new_zeros(T, B, GH) if ln else e  # d (y_{t-1} R^T)
        dc_seen = x_proj.new_empty(T, B, H) if ln else e  # d (g_c LN(c_t) + b_c)
        own_c = Chat if has_zone else C  # the c the gates and h saw (zoneout keeps another)
        L = ctx.layout
        gates = [L["OFF_I"], L["OFF_F"], L["OFF_O"]]
        dY = torch.zeros_like(states_y) if dY is None else dY.contiguous()
        dy = torch.zeros_like(y0) if dyT is None else dyT.contiguous().clone()
        dc = torch.zeros_like(c0) if dcT is None else dcT.contiguous().clone()
        da = torch.zeros_like(a0) if (daT is None or not fgr) else daT.contiguous().clone()
        dpre = x_proj.new_zeros(T, B, GH)  # rows of absent gates stay zero
        direct, dc_prev = torch.empty_like(dy), torch.empty_like(dc)
        grid, blocks_kw = _launch(H, GH, B, ln)
        d_rec = drp if ln else dpre  # the gradient of y_{t-1} R^T
        for t in range(T - 1, -1, -1):
            c_prev = C[t - 1] if t > 0 else c0
            _lstm_backward_step[grid](
                dY[t], dy, dc, da, acts[t], c_prev, own_c[t], peephole,
                v8[t] if has_valid else v8, zone[t] if has_zone else zone, ln_r, ln_cw, ln_cb,
                rhat[t] if ln else e, cn[t] if ln else e, stats[t] if ln else e, dpre[t],
                direct, dc_prev, drp[t] if ln else e, dc_seen[t] if ln else e, H, GH, **L,
                HAS_VALID=has_valid, FGR=fgr, HAS_ZONE=has_zone, LN=ln, **blocks_kw,
            )  # fmt: skip
            through = d_rec[t] @ weight_hh
            dy = direct + (through * rmask if has_mask else through)
            dc, dc_prev = dc_prev, dc
            if fgr:  # d a_{t-1}: through W_gg, or all of d a_t on a padded row
                d_gates = dpre[t].view(B, GH // H, H)[:, gates].reshape(B, 3 * H)
                passed = d_gates @ weight_gg
                da = torch.where(v8[t, :, None] != 0, passed, da) if has_valid else passed
        y_prev = torch.cat([y0[None], states_y[:-1]])
        if has_mask:
            y_prev = y_prev * rmask
        d_weight_hh = d_rec.reshape(T * B, GH).t() @ y_prev.reshape(T * B, H)
        d_ln = [None, None, None]
        if ln:  # the gains' and c's bias's gradients, as sums over steps and rows
            d_ln = [(dpre * rhat).sum((0, 1)), (dc_seen * cn).sum((0, 1)), dc_seen.sum((0, 1))]
        d_weight_gg = None
        if fgr:
            a_prev = torch.cat([a0[None], A[:-1]]).reshape(T * B, 3 * H)
            d_gates = dpre.view(T * B, GH // H, H)[:, gates].reshape(T * B, 3 * H)
            d_weight_gg = d_gates.t() @ a_prev
        d_peephole = None
        if peephole.numel():
            d_peephole = torch.zeros_like(peephole)
            c_prev_all = torch.cat([c0[None], C[:-1]])
            for key, name, c_seen in (("P_I", "OFF_I", c_prev_all), ("P_F", "OFF_F", c_prev_all),
                                      ("P_O", "OFF_O", own_c)):  # fmt: skip
                if L[key] >= 0:
                    k = L[name]
                    d_peephole[L[key]] = (dpre[..., k * H : (k + 1) * H] * c_seen).sum((0, 1))
        return (dpre, d_weight_hh, d_peephole, d_weight_gg, dy, dc, da if fgr else None, None,
                None, None, *d_ln, None)  # fmt: skip


def layout_of(cell: Any) -> dict[str, Any] | None:
    """The kernels' constants for an LSTM cell."""
    v = cell.variant

    def offset(k: str) -> int:
        return cell.blocks.index(k) if k in cell.blocks else -1

    def row(k: str) -> int:
        return v.peephole_rows.index(k) if k in v.peephole_rows else -1

    return {"OFF_I": offset("i"), "OFF_F": offset("f"), "OFF_Z": offset("z"),
            "OFF_O": offset("o"), "P_I": row("i"), "P_F": row("f"), "P_O": row("o"),
            "COUPLED": bool(v.coupled), "IN_ACT": bool(v.input_activation),
            "OUT_ACT": bool(v.output_activation)}  # fmt: skip


def lstm_sequence(
    cell: Any, x_proj: Tensor, state: tuple[Tensor, ...], valid: Tensor | None,
    rmask: Tensor | None, zone: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]] | None:  # fmt: skip
    """One layer and direction of an LSTM-family cell: x_proj (T, B, G*H), state (y0, c0[, a0]),
    valid (T, B) bool. Returns the outputs (T, B, H) and the final state, or None where the
    kernels do not apply (no Triton; a step normalisation, ``options.norm``; layer norm above
    ``LN_MAX_HIDDEN`` units)."""
    ln = cell.options.layer_norm
    if triton is None or cell.step_norms is not None:
        return None
    if ln and cell.hidden_size > LN_MAX_HIDDEN:
        return None
    layout = layout_of(cell)
    e = x_proj.new_empty(0)
    ln_params = (cell.ln_hh_weight, cell.ln_c_weight, cell.ln_c_bias) if ln else (e, e, e)
    v = cell.variant
    peephole = cell.peephole if v.peephole_rows else e
    weight_gg = cell.weight_gg if v.full_gate_recurrence else e
    a0 = state[2] if v.full_gate_recurrence else e
    Y, yT, cT, aT = _LSTMFunction.apply(
        x_proj.contiguous(), cell.weight_hh, peephole, weight_gg, state[0], state[1], a0,
        e if valid is None else valid, e if rmask is None else rmask,
        e if zone is None else zone, *ln_params, layout,
    )  # fmt: skip
    return Y, ((yT, cT, aT) if v.full_gate_recurrence else (yT, cT))
