"""Both GRUs on a GPU: the gate arithmetic of each step fused into Triton kernels beside the
recurrent products (cuBLAS), as in ``rnnlab.kernels.gpu`` (the LSTM family); rows r, u, n.

``gru`` (torch/cuDNN form, ``GRUCell``): r = s(x_r + R_r h + b'_r), u = s(x_u + R_u h + b'_u),
n = tanh(x_n + r (R_n h + b'_n)), h^ = n + u (h_{t-1} - n). Forward, per step: one ``addmm``,
h_{t-1} m R^T + b' (3H; ``mm`` alone with layer norm, b' then added after it in the kernel),
then one kernel for every gate, h_t, the padding rule and the saved activations (r, u, n and
the candidate's recurrent term R_n h + b'_n). Backward, per step in reverse: one kernel back
through the gates to d x_proj_t and to d (h m R^T + b'), then one product d (h m R^T) R to
h_{t-1}. After the loop: dR = sum_t d(h m R^T)_t^T (h_{t-1} m) and db' = sum_t d(h m R^T +
b')_t, each a single product or reduction.

``gru-v1`` (Chung et al. 2014, ``GRUv1Cell``): n = tanh(x_n + R_n (r h)), no b'. Two products
per step, each followed by a kernel: (h m) R_ru^T, then the kernel for r, u and r (h m); then
(r h m) R_n^T, then the kernel for n and h_t. The backward mirrors it: a kernel through h_t and
n, the product with R_n, a kernel through r and u, the product with R_ru.

Options, as the cells have them (m is recurrent dropout's mask, one per sequence):
zoneout (Krueger et al. 2017), one keep mask d per unit and step: h_t = d h_{t-1} + (1 - d) h^;
the backward needs only d (h^'s own gradient is (1 - d) of h_t's; h_{t-1} takes d of it).
Layer norm (Ba et al. 2016) of the recurrent products, W x's being the input projection's
outside the loop: ``gru`` g LN(h m R^T) + b' over all 3H rows; ``gru-v1`` g LN((h m) R_ru^T)
over its 2H gate rows and g LN((r h m) R_n^T) over its H candidate rows. A kernel that
normalises runs one program per batch row (BLOCK >= H, BLOCK_G >= the row's width), saves the
normalised row before its gain and 1/sigma, and its backward twin takes the gradient back
through the normalisation with the same row sums; the gains' gradients are sums after the loop.
Above ``LN_MAX_HIDDEN`` units the step loop runs. Padded steps keep h and output 0.

Not covered (the step loop runs): a step normalisation (``norm``). Plain ``gru`` on a GPU runs
cuDNN under ``backend="auto"`` (``kernels.torchrnn``); these kernels serve it with zoneout,
recurrent dropout in training, layer norm, and under ``backend="fused"``.

No GPU has been lent to this project: these kernels are tested on the CPU in Triton's
interpreter (``TRITON_INTERPRET=1``, ``tests/test_gpu_gru.py``) against the step loop, in
float64 with gradients; their speed on a GPU has not been measured.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rnnlab.kernels.gpu import LN_MAX_HIDDEN, _launch

try:  # Triton comes with torch's CUDA wheels; the CPU wheel runs the step loop on a GPU
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover (Triton is a dev dependency)
    triton = None


def available() -> bool:
    return triton is not None


if triton is not None:
    # Only Triton's builtins, as in rnnlab.kernels.gpu (see its note): sigmoid(x) =
    # 1 / (1 + exp(-x)), tanh(x) = 2 sigmoid(2x) - 1, row sums tl.reduce with ``_add``.
    @triton.jit
    def _add(a, b):  # type: ignore[no-untyped-def]
        return a + b

    @triton.jit
    def _gru_forward_step(  # type: ignore[no-untyped-def]
        xp, rp, ln_g, b_hh, h_prev, valid, zone, acts, rhat_out, stats, h_out, Y_out, H, GH,
        HAS_VALID: tl.constexpr, HAS_ZONE: tl.constexpr, LN: tl.constexpr, BLOCK: tl.constexpr,
        BLOCK_G: tl.constexpr,
    ):  # fmt: skip
        """One step of ``gru`` for batch row b (program 0) and BLOCK units (program 1). ``rp``
        (B, 3H) is h m R^T + b' or, with layer norm (``LN``, one program per row), h m R^T alone:
        the kernel takes g LN(rp) + b' over the 3H row, writing LN(rp) to ``rhat_out`` and its
        1/sigma to ``stats`` (B). ``acts`` (B, 4H) gets r, u, n and the candidate's recurrent
        term; ``zone`` (B, H) holds zoneout's keep masks."""
        b = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        row = b * GH
        h_r = tl.load(rp + row + cols, mask=keep, other=0.0)
        h_u = tl.load(rp + row + H + cols, mask=keep, other=0.0)
        h_n = tl.load(rp + row + 2 * H + cols, mask=keep, other=0.0)
        if LN:  # the statistics of h m R^T over the whole row, two passes
            gcols = tl.arange(0, BLOCK_G)
            gkeep = gcols < GH
            r_all = tl.load(rp + row + gcols, mask=gkeep, other=0.0)
            mean = tl.reduce(r_all, 0, _add) / GH
            dev = tl.where(gkeep, r_all - mean, 0.0)
            rstd = 1.0 / tl.sqrt(tl.reduce(dev * dev, 0, _add) / GH + 1e-5)
            tl.store(rhat_out + row + gcols, dev * rstd, mask=gkeep)
            tl.store(stats + b, rstd)
            h_r = (h_r - mean) * rstd * tl.load(ln_g + cols, mask=keep, other=0.0)
            h_r += tl.load(b_hh + cols, mask=keep, other=0.0)
            h_u = (h_u - mean) * rstd * tl.load(ln_g + H + cols, mask=keep, other=0.0)
            h_u += tl.load(b_hh + H + cols, mask=keep, other=0.0)
            h_n = (h_n - mean) * rstd * tl.load(ln_g + 2 * H + cols, mask=keep, other=0.0)
            h_n += tl.load(b_hh + 2 * H + cols, mask=keep, other=0.0)
        r = h_r + tl.load(xp + b * 3 * H + cols, mask=keep, other=0.0)
        r = 1.0 / (1.0 + tl.exp(-r))
        u = h_u + tl.load(xp + b * 3 * H + H + cols, mask=keep, other=0.0)
        u = 1.0 / (1.0 + tl.exp(-u))
        n = tl.load(xp + b * 3 * H + 2 * H + cols, mask=keep, other=0.0) + r * h_n
        n = 2.0 / (1.0 + tl.exp(-2.0 * n)) - 1.0
        hp = tl.load(h_prev + b * H + cols, mask=keep, other=0.0)
        h = n + u * (hp - n)
        if HAS_ZONE:
            d = tl.load(zone + b * H + cols, mask=keep, other=0.0)
            h = d * hp + (1.0 - d) * h
        out = h
        if HAS_VALID:
            v = tl.load(valid + b)
            if v == 0:  # a padded step: the state passes, the output is 0
                h = hp
                out = tl.full([BLOCK], 0.0, hp.dtype)
        base = b * 4 * H
        tl.store(acts + base + cols, r, mask=keep)
        tl.store(acts + base + H + cols, u, mask=keep)
        tl.store(acts + base + 2 * H + cols, n, mask=keep)
        tl.store(acts + base + 3 * H + cols, h_n, mask=keep)
        tl.store(h_out + b * H + cols, h, mask=keep)
        tl.store(Y_out + b * H + cols, out, mask=keep)

    @triton.jit
    def _gru_backward_step(  # type: ignore[no-untyped-def]
        dY, dh, acts, h_prev, valid, zone, ln_g, rhat, stats, dpre, drh, drp, direct, H, GH,
        HAS_VALID: tl.constexpr, HAS_ZONE: tl.constexpr, LN: tl.constexpr, BLOCK: tl.constexpr,
        BLOCK_G: tl.constexpr,
    ):  # fmt: skip
        """Back through one step of ``gru``: d x_proj_t into ``dpre`` (rows r, u, n), the
        gradient of the recurrent terms (h m R^T + b', normalised or not) into ``drh``, the part
        of d h_{t-1} that does not go through R into ``direct``; with layer norm (one program per
        row) ``drp`` = d (h m R^T), back through LN as dx = (dx^ - mean(dx^) - x^ mean(dx^ x^))
        / sigma with dx^ = g drh."""
        b = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        carried = tl.load(dh + b * H + cols, mask=keep, other=0.0)
        g_all = carried + tl.load(dY + b * H + cols, mask=keep, other=0.0)
        g = g_all
        zoned = tl.full([BLOCK], 0.0, g.dtype)  # what d h_t takes past the cell to h_{t-1}
        if HAS_ZONE:
            d = tl.load(zone + b * H + cols, mask=keep, other=0.0)
            zoned = d * g_all
            g = (1.0 - d) * g_all
        base = b * 4 * H
        r = tl.load(acts + base + cols, mask=keep, other=0.0)
        u = tl.load(acts + base + H + cols, mask=keep, other=0.0)
        n = tl.load(acts + base + 2 * H + cols, mask=keep, other=0.0)
        h_n = tl.load(acts + base + 3 * H + cols, mask=keep, other=0.0)
        hp = tl.load(h_prev + b * H + cols, mask=keep, other=0.0)
        dn = g * (1.0 - u) * (1.0 - n * n)  # d (x_n + r h_n)
        du = g * (hp - n) * u * (1.0 - u)
        dr = dn * h_n * r * (1.0 - r)
        dh_n = dn * r
        direct_t = g * u + zoned
        if HAS_VALID:
            v = tl.load(valid + b)
            if v == 0:  # a padded step: the state passed through, the output a constant 0
                dn = tl.full([BLOCK], 0.0, hp.dtype)
                du = dn
                dr = dn
                dh_n = dn
                direct_t = carried
        row = b * GH
        tl.store(dpre + row + cols, dr, mask=keep)
        tl.store(dpre + row + H + cols, du, mask=keep)
        tl.store(dpre + row + 2 * H + cols, dn, mask=keep)
        tl.store(drh + row + cols, dr, mask=keep)
        tl.store(drh + row + H + cols, du, mask=keep)
        tl.store(drh + row + 2 * H + cols, dh_n, mask=keep)
        tl.store(direct + b * H + cols, direct_t, mask=keep)
        if LN:
            gr = tl.load(ln_g + cols, mask=keep, other=0.0) * dr
            gu = tl.load(ln_g + H + cols, mask=keep, other=0.0) * du
            gn = tl.load(ln_g + 2 * H + cols, mask=keep, other=0.0) * dh_n
            xr = tl.load(rhat + row + cols, mask=keep, other=0.0)
            xu = tl.load(rhat + row + H + cols, mask=keep, other=0.0)
            xn = tl.load(rhat + row + 2 * H + cols, mask=keep, other=0.0)
            m1 = (tl.reduce(gr, 0, _add) + tl.reduce(gu, 0, _add) + tl.reduce(gn, 0, _add)) / GH
            m2 = tl.reduce(gr * xr, 0, _add) + tl.reduce(gu * xu, 0, _add)
            m2 = (m2 + tl.reduce(gn * xn, 0, _add)) / GH
            rstd = tl.load(stats + b)
            tl.store(drp + row + cols, rstd * (gr - m1 - xr * m2), mask=keep)
            tl.store(drp + row + H + cols, rstd * (gu - m1 - xu * m2), mask=keep)
            tl.store(drp + row + 2 * H + cols, rstd * (gn - m1 - xn * m2), mask=keep)

    @triton.jit
    def _gru_v1_gates(  # type: ignore[no-untyped-def]
        xp, ru, h_in, ln_g, r_out, u_out, rh_out, rhat_out, stats, H,
        LN: tl.constexpr, BLOCK: tl.constexpr, BLOCK_G: tl.constexpr,
    ):  # fmt: skip
        """r = s(x_r + a_r), u = s(x_u + a_u) with a = (h m) R_ru^T (``ru``, B x 2H), or
        g LN(a) over its 2H row with layer norm (one program per row; LN(a) into
        ``rhat_out``'s first 2H columns of 3H, 1/sigma into ``stats``' first of 2); and r (h m),
        the input of the product with R_n."""
        b = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        a_r = tl.load(ru + b * 2 * H + cols, mask=keep, other=0.0)
        a_u = tl.load(ru + b * 2 * H + H + cols, mask=keep, other=0.0)
        if LN:
            gcols = tl.arange(0, BLOCK_G)
            gkeep = gcols < 2 * H
            a_all = tl.load(ru + b * 2 * H + gcols, mask=gkeep, other=0.0)
            mean = tl.reduce(a_all, 0, _add) / (2 * H)
            dev = tl.where(gkeep, a_all - mean, 0.0)
            rstd = 1.0 / tl.sqrt(tl.reduce(dev * dev, 0, _add) / (2 * H) + 1e-5)
            tl.store(rhat_out + b * 3 * H + gcols, dev * rstd, mask=gkeep)
            tl.store(stats + b * 2, rstd)
            a_r = (a_r - mean) * rstd * tl.load(ln_g + cols, mask=keep, other=0.0)
            a_u = (a_u - mean) * rstd * tl.load(ln_g + H + cols, mask=keep, other=0.0)
        r = a_r + tl.load(xp + b * 3 * H + cols, mask=keep, other=0.0)
        u = a_u + tl.load(xp + b * 3 * H + H + cols, mask=keep, other=0.0)
        r = 1.0 / (1.0 + tl.exp(-r))
        u = 1.0 / (1.0 + tl.exp(-u))
        tl.store(r_out + b * H + cols, r, mask=keep)
        tl.store(u_out + b * H + cols, u, mask=keep)
        tl.store(rh_out + b * H + cols, r * tl.load(h_in + b * H + cols, mask=keep, other=0.0),
                 mask=keep)  # fmt: skip

    @triton.jit
    def _gru_v1_update(  # type: ignore[no-untyped-def]
        xp, hn, h_prev, u_in, valid, zone, ln_g, n_out, h_out, Y_out, rhat_out, stats, H,
        HAS_VALID: tl.constexpr, HAS_ZONE: tl.constexpr, LN: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """n = tanh(x_n + c), c = (r h m) R_n^T (``hn``) or g_n LN(c) over its H row with layer
        norm (one program per row; LN(c) into ``rhat_out``'s last H columns, 1/sigma into
        ``stats``' second); h^ = n + u (h_prev - n), zoned with ``zone``'s keep masks; padded
        rows keep h_prev and output 0."""
        b = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        c = tl.load(hn + b * H + cols, mask=keep, other=0.0)
        if LN:
            mean = tl.reduce(c, 0, _add) / H
            dev = tl.where(keep, c - mean, 0.0)
            rstd = 1.0 / tl.sqrt(tl.reduce(dev * dev, 0, _add) / H + 1e-5)
            tl.store(rhat_out + b * 3 * H + 2 * H + cols, dev * rstd, mask=keep)
            tl.store(stats + b * 2 + 1, rstd)
            c = dev * rstd * tl.load(ln_g + 2 * H + cols, mask=keep, other=0.0)
        n = tl.load(xp + b * 3 * H + 2 * H + cols, mask=keep, other=0.0) + c
        n = 2.0 / (1.0 + tl.exp(-2.0 * n)) - 1.0
        hp = tl.load(h_prev + b * H + cols, mask=keep, other=0.0)
        u = tl.load(u_in + b * H + cols, mask=keep, other=0.0)
        h = n + u * (hp - n)
        if HAS_ZONE:
            d = tl.load(zone + b * H + cols, mask=keep, other=0.0)
            h = d * hp + (1.0 - d) * h
        out = h
        if HAS_VALID:
            v = tl.load(valid + b)
            if v == 0:
                h = hp
                out = tl.full([BLOCK], 0.0, hp.dtype)
        tl.store(n_out + b * H + cols, n, mask=keep)
        tl.store(h_out + b * H + cols, h, mask=keep)
        tl.store(Y_out + b * H + cols, out, mask=keep)

    @triton.jit
    def _gru_v1_back_update(  # type: ignore[no-untyped-def]
        dY, dh, n_in, u_in, h_prev, valid, zone, ln_g, rhat, stats, dpre, drp, du, direct, H,
        HAS_VALID: tl.constexpr, HAS_ZONE: tl.constexpr, LN: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """Through h_t (zoneout included) and n: d n~ (before tanh) into row n of ``dpre``
        (B, 3H), d u (after its sigmoid), and the part of d h_prev that does not go through a
        product (u d h^ + d d h_t; all of it if padded). With layer norm (one program per row)
        row n of ``drp`` gets d c back through LN(c)."""
        b = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        carried = tl.load(dh + b * H + cols, mask=keep, other=0.0)
        g_all = carried + tl.load(dY + b * H + cols, mask=keep, other=0.0)
        g = g_all
        zoned = tl.full([BLOCK], 0.0, g.dtype)
        if HAS_ZONE:
            d = tl.load(zone + b * H + cols, mask=keep, other=0.0)
            zoned = d * g_all
            g = (1.0 - d) * g_all
        n = tl.load(n_in + b * H + cols, mask=keep, other=0.0)
        u = tl.load(u_in + b * H + cols, mask=keep, other=0.0)
        hp = tl.load(h_prev + b * H + cols, mask=keep, other=0.0)
        gn = g * (1.0 - u) * (1.0 - n * n)
        gu = g * (hp - n)
        gd = g * u + zoned
        if HAS_VALID:
            v = tl.load(valid + b)
            if v == 0:
                gn = tl.full([BLOCK], 0.0, hp.dtype)
                gu = gn
                gd = carried
        tl.store(dpre + b * 3 * H + 2 * H + cols, gn, mask=keep)
        tl.store(du + b * H + cols, gu, mask=keep)
        tl.store(direct + b * H + cols, gd, mask=keep)
        if LN:
            gx = tl.load(ln_g + 2 * H + cols, mask=keep, other=0.0) * gn
            xn = tl.load(rhat + b * 3 * H + 2 * H + cols, mask=keep, other=0.0)
            m1 = tl.reduce(gx, 0, _add) / H
            m2 = tl.reduce(gx * xn, 0, _add) / H
            tl.store(drp + b * 3 * H + 2 * H + cols,
                     tl.load(stats + b * 2 + 1) * (gx - m1 - xn * m2), mask=keep)  # fmt: skip

    @triton.jit
    def _gru_v1_back_gates(  # type: ignore[no-untyped-def]
        drh, du, r_in, u_in, h_in, ln_g, rhat, stats, dpre, drp, direct, H,
        LN: tl.constexpr, BLOCK: tl.constexpr, BLOCK_G: tl.constexpr,
    ):  # fmt: skip
        """From d(r h m) and d u: d r~, d u~ into rows r, u of ``dpre`` (row n written before),
        and r d(r h m), the direct part of d (h m). With layer norm (one program per row) rows
        r, u of ``drp`` get d ((h m) R_ru^T) back through LN over the 2H row."""
        b = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        g = tl.load(drh + b * H + cols, mask=keep, other=0.0)
        r = tl.load(r_in + b * H + cols, mask=keep, other=0.0)
        u = tl.load(u_in + b * H + cols, mask=keep, other=0.0)
        h = tl.load(h_in + b * H + cols, mask=keep, other=0.0)
        dr = g * h * r * (1.0 - r)
        du_pre = tl.load(du + b * H + cols, mask=keep, other=0.0) * u * (1.0 - u)
        tl.store(dpre + b * 3 * H + cols, dr, mask=keep)
        tl.store(dpre + b * 3 * H + H + cols, du_pre, mask=keep)
        tl.store(direct + b * H + cols, g * r, mask=keep)
        if LN:
            gr = tl.load(ln_g + cols, mask=keep, other=0.0) * dr
            gu = tl.load(ln_g + H + cols, mask=keep, other=0.0) * du_pre
            xr = tl.load(rhat + b * 3 * H + cols, mask=keep, other=0.0)
            xu = tl.load(rhat + b * 3 * H + H + cols, mask=keep, other=0.0)
            m1 = (tl.reduce(gr, 0, _add) + tl.reduce(gu, 0, _add)) / (2 * H)
            m2 = (tl.reduce(gr * xr, 0, _add) + tl.reduce(gu * xu, 0, _add)) / (2 * H)
            rstd = tl.load(stats + b * 2)
            tl.store(drp + b * 3 * H + cols, rstd * (gr - m1 - xr * m2), mask=keep)
            tl.store(drp + b * 3 * H + H + cols, rstd * (gu - m1 - xu * m2), mask=keep)


def _flags(valid: Tensor, rmask: Tensor, zone: Tensor, ln_g: Tensor) -> tuple[bool, ...]:
    """Which of lengths, recurrent dropout, zoneout and layer norm are on (empty = off)."""
    return valid.numel() > 0, rmask.numel() > 0, zone.numel() > 0, ln_g.numel() > 0


def _previous_inputs(h0: Tensor, states: Tensor, rmask: Tensor) -> Tensor:
    """h_{t-1} m for every step (T, B, H): what the recurrent products saw."""
    h_prev = torch.cat([h0[None], states[:-1]])
    return h_prev * rmask if rmask.numel() > 0 else h_prev


class _GRUFunction(torch.autograd.Function):
    """``gru``: per step one product h m R^T (+ b' by ``addmm`` without layer norm) and one
    kernel. With layer norm (``ln_g`` (3H) given) the kernel takes g LN(h m R^T) + b'."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x_proj: Tensor, weight_hh: Tensor, bias_hh: Tensor, h0: Tensor, valid: Tensor,
        rmask: Tensor, zone: Tensor, ln_g: Tensor,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        T, B, GH = x_proj.shape
        H = weight_hh.shape[1]
        has_valid, has_mask, has_zone, ln = _flags(valid, rmask, zone, ln_g)
        e = x_proj.new_empty(0)
        v8 = valid.to(torch.int8).contiguous() if has_valid else valid
        zone, h0 = zone.contiguous(), h0.contiguous()  # the kernels read rows by arithmetic
        Y, states = x_proj.new_empty(T, B, H), x_proj.new_empty(T, B, H)
        acts = x_proj.new_empty(T, B, 4 * H)  # r, u, n and R_n h m + b'_n (normalised or not)
        rhat = x_proj.new_empty(T, B, GH) if ln else e  # LN(h m R^T) before its gain
        stats = x_proj.new_empty(T, B) if ln else e  # its 1/sigma
        rp = x_proj.new_empty(B, GH)
        grid, blocks_kw = _launch(H, GH, B, ln)
        R_t = weight_hh.t()
        h = h0
        for t in range(T):
            h_in = h * rmask if has_mask else h
            if ln:  # b' comes after the normalisation, in the kernel
                torch.mm(h_in, R_t, out=rp)
            else:
                torch.addmm(bias_hh, h_in, R_t, out=rp)
            _gru_forward_step[grid](
                x_proj[t], rp, ln_g, bias_hh, h, v8[t] if has_valid else v8,
                zone[t] if has_zone else zone, acts[t], rhat[t] if ln else e,
                stats[t] if ln else e, states[t], Y[t], H, GH, HAS_VALID=has_valid,
                HAS_ZONE=has_zone, LN=ln, **blocks_kw,
            )  # fmt: skip
            h = states[t]
        ctx.save_for_backward(x_proj, weight_hh, h0, v8, rmask, zone, ln_g, states, acts, rhat,
                              stats)  # fmt: skip
        return Y, h.clone()

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, dY: Tensor | None, dhT: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        x_proj, weight_hh, h0, v8, rmask, zone, ln_g, states, acts, rhat, stats = ctx.saved_tensors
        T, B, GH = x_proj.shape
        H = weight_hh.shape[1]
        has_valid, has_mask, has_zone, ln = _flags(v8, rmask, zone, ln_g)
        e = x_proj.new_empty(0)
        dY = torch.zeros_like(states) if dY is None else dY.contiguous()
        dh = torch.zeros_like(h0) if dhT is None else dhT.contiguous().clone()
        dpre = x_proj.new_empty(T, B, GH)  # d x_proj
        drh = x_proj.new_empty(T, B, GH)  # d (the recurrent terms, g LN(.) + b' or . + b')
        drp = x_proj.new_empty(T, B, GH) if ln else e  # d (h m R^T) before the normalisation
        d_rec = drp if ln else drh
        direct = torch.empty_like(dh)
        grid, blocks_kw = _launch(H, GH, B, ln)
        for t in range(T - 1, -1, -1):
            h_prev = states[t - 1] if t > 0 else h0
            _gru_backward_step[grid](
                dY[t], dh, acts[t], h_prev, v8[t] if has_valid else v8,
                zone[t] if has_zone else zone, ln_g, rhat[t] if ln else e, stats[t] if ln else e,
                dpre[t], drh[t], drp[t] if ln else e, direct, H, GH, HAS_VALID=has_valid,
                HAS_ZONE=has_zone, LN=ln, **blocks_kw,
            )  # fmt: skip
            through = d_rec[t] @ weight_hh
            dh = direct + (through * rmask if has_mask else through)
        h_in_all = _previous_inputs(h0, states, rmask).reshape(T * B, H)
        d_weight_hh = d_rec.reshape(T * B, GH).t() @ h_in_all
        d_bias_hh = drh.sum((0, 1))
        d_ln = (drh * rhat).sum((0, 1)) if ln else None
        return dpre, d_weight_hh, d_bias_hh, dh, None, None, None, d_ln


class _GRUv1Function(torch.autograd.Function):
    """``gru-v1``: two products per step, R_ru on h m and R_n on r h m, a kernel after each.
    With layer norm (``ln_g`` (3H) given) each product is normalised over its own rows."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x_proj: Tensor, weight_hh: Tensor, h0: Tensor, valid: Tensor, rmask: Tensor,
        zone: Tensor, ln_g: Tensor,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        T, B, _ = x_proj.shape
        H = weight_hh.shape[1]
        has_valid, has_mask, has_zone, ln = _flags(valid, rmask, zone, ln_g)
        e = x_proj.new_empty(0)
        v8 = valid.to(torch.int8).contiguous() if has_valid else valid
        zone, h0 = zone.contiguous(), h0.contiguous()  # the kernels read rows by arithmetic
        W_ru, W_n = weight_hh[: 2 * H].t(), weight_hh[2 * H :].t()
        Y, states, R, U, N = (x_proj.new_empty(T, B, H) for _ in range(5))
        rhat = x_proj.new_empty(T, B, 3 * H) if ln else e  # both LN rows before their gains
        stats = x_proj.new_empty(T, B, 2) if ln else e  # their 1/sigma
        ru, rh, hn = x_proj.new_empty(B, 2 * H), x_proj.new_empty(B, H), x_proj.new_empty(B, H)
        grid_ru, kw_ru = _launch(H, 2 * H, B, ln)
        grid_n, kw_n = _launch(H, H, B, ln)
        h = h0
        for t in range(T):
            h_in = h * rmask if has_mask else h
            torch.mm(h_in, W_ru, out=ru)
            _gru_v1_gates[grid_ru](x_proj[t], ru, h_in, ln_g, R[t], U[t], rh,
                                   rhat[t] if ln else e, stats[t] if ln else e, H, LN=ln,
                                   **kw_ru)  # fmt: skip
            torch.mm(rh, W_n, out=hn)
            _gru_v1_update[grid_n](
                x_proj[t], hn, h, U[t], v8[t] if has_valid else v8, zone[t] if has_zone else zone,
                ln_g, N[t], states[t], Y[t], rhat[t] if ln else e, stats[t] if ln else e, H,
                HAS_VALID=has_valid, HAS_ZONE=has_zone, LN=ln, BLOCK=kw_n["BLOCK"],
            )  # fmt: skip
            h = states[t]
        ctx.save_for_backward(x_proj, weight_hh, h0, v8, rmask, zone, ln_g, states, R, U, N, rhat,
                              stats)  # fmt: skip
        return Y, h.clone()

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, dY: Tensor | None, dhT: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        x_proj, weight_hh, h0, v8, rmask, zone, ln_g, states, R, U, N, rhat, stats = (
            ctx.saved_tensors
        )
        T, B, _ = x_proj.shape
        H = weight_hh.shape[1]
        has_valid, has_mask, has_zone, ln = _flags(v8, rmask, zone, ln_g)
        e = x_proj.new_empty(0)
        dY = torch.zeros_like(states) if dY is None else dY.contiguous()
        dh = torch.zeros_like(h0) if dhT is None else dhT.contiguous().clone()
        W_ru, W_n = weight_hh[: 2 * H], weight_hh[2 * H :]
        dpre = x_proj.new_empty(T, B, 3 * H)  # d x_proj: every row written by the kernels
        drp = x_proj.new_empty(T, B, 3 * H) if ln else e  # d (both products) before their LN
        d_rec = drp if ln else dpre
        du, direct, direct_in = (torch.empty_like(dh) for _ in range(3))
        d_rh = x_proj.new_empty(B, H)  # d(r h m)
        grid_ru, kw_ru = _launch(H, 2 * H, B, ln)
        grid_n, kw_n = _launch(H, H, B, ln)
        for t in range(T - 1, -1, -1):
            h_prev = states[t - 1] if t > 0 else h0
            h_in = h_prev * rmask if has_mask else h_prev
            _gru_v1_back_update[grid_n](
                dY[t], dh, N[t], U[t], h_prev, v8[t] if has_valid else v8,
                zone[t] if has_zone else zone, ln_g, rhat[t] if ln else e,
                stats[t] if ln else e, dpre[t], drp[t] if ln else e, du, direct, H,
                HAS_VALID=has_valid, HAS_ZONE=has_zone, LN=ln, BLOCK=kw_n["BLOCK"],
            )  # fmt: skip
            torch.mm(d_rec[t, :, 2 * H :], W_n, out=d_rh)
            _gru_v1_back_gates[grid_ru](d_rh, du, R[t], U[t], h_in, ln_g, rhat[t] if ln else e,
                                        stats[t] if ln else e, dpre[t], drp[t] if ln else e,
                                        direct_in, H, LN=ln, **kw_ru)  # fmt: skip
            through = direct_in + d_rec[t, :, : 2 * H] @ W_ru  # d(h m)
            dh = direct + (through * rmask if has_mask else through)
        h_in_all = _previous_inputs(h0, states, rmask)
        rows = T * B
        d_ru = d_rec[..., : 2 * H].reshape(rows, 2 * H).t() @ h_in_all.reshape(rows, H)
        d_n = d_rec[..., 2 * H :].reshape(rows, H).t() @ (R * h_in_all).reshape(rows, H)
        d_ln = (dpre * rhat).sum((0, 1)) if ln else None
        return dpre, torch.cat([d_ru, d_n]), dh, None, None, None, d_ln


def _covered(cell: Any) -> bool:
    """Whether the kernels compute this cell's layer: Triton present, no step normalisation,
    layer norm only up to ``LN_MAX_HIDDEN`` units (one program holds a row)."""
    if triton is None or cell.step_norms is not None:
        return False
    return not (cell.options.layer_norm and cell.hidden_size > LN_MAX_HIDDEN)


def gru_sequence(
    cell: Any, x_proj: Tensor, h0: Tensor, valid: Tensor | None, rmask: Tensor | None,
    zone: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]] | None:  # fmt: skip
    """One layer and direction of ``gru``: x_proj (T, B, 3H), rows r, u, n (with layer norm
    already g LN(W x) + b); valid (T, B) bool, rmask (B, H), zone (T, B, H). Returns the outputs
    (T, B, H) and (h_T,), or None where the kernels do not apply (``_covered``)."""
    if not _covered(cell):
        return None
    e = x_proj.new_empty(0)
    Y, hT = _GRUFunction.apply(
        x_proj.contiguous(), cell.weight_hh, cell.bias_hh, h0, e if valid is None else valid,
        e if rmask is None else rmask, e if zone is None else zone,
        cell.ln_hh_weight if cell.options.layer_norm else e,
    )  # fmt: skip
    return Y, (hT,)


def gru_v1_sequence(
    cell: Any, x_proj: Tensor, h0: Tensor, valid: Tensor | None, rmask: Tensor | None,
    zone: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]] | None:  # fmt: skip
    """One layer and direction of ``gru-v1``: as ``gru_sequence``."""
    if not _covered(cell):
        return None
    e = x_proj.new_empty(0)
    Y, hT = _GRUv1Function.apply(
        x_proj.contiguous(), cell.weight_hh, h0, e if valid is None else valid,
        e if rmask is None else rmask, e if zone is None else zone,
        cell.ln_hh_weight if cell.options.layer_norm else e,
    )  # fmt: skip
    return Y, (hT,)
