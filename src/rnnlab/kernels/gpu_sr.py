"""The state-regularised cells on a GPU (Wang & Niepert 2019: ``sr-gru``, ``sr-lstm``): the twin of
their fused CPU kernels (csrc/state_regularised.cpp) in the scheme of ``rnnlab.kernels.gpu``: the
recurrent products are cuBLAS's, the gate arithmetic and the pull to the centroids Triton's.

Forward, per step t, with h_in = h_{t-1} * mask (recurrent dropout; the mask is 1 without it):
- SR-GRU, rows z, r, c: ``h_in [W_z; W_r]^T`` (one ``mm``), an elementwise kernel for the hard
  sigmoids' arguments v_z, v_r (v = 0.2 a + 0.5, saved) and r h_in, then ``(r h_in) W_c^T`` (a
  second ``mm``) and one kernel per batch row: c = tanh(.), u = (1 - z) c + z h_{t-1}, the pull.
- SR-LSTM(-P), rows i, f, z, o: ``pre = x_proj[t] + h_in R^T`` (one ``addmm``, the bias in
  x_proj), then one kernel per batch row: the gates with the peepholes, c_t (which passes on
  unregularised), u = o tanh(c_t), the pull.

The pull, in that row kernel (one program per batch row; H in blocks of ``BLOCK_H``, all k
centroids in one block): the logits l = S u / tau as k dot products of length H accumulated block
by block, alpha = softmax(l) with the maximum subtracted, then h_t = S^T alpha block by block.
A padded step keeps the state, outputs 0 and saves zeros.

Backward, per step in reverse: one kernel per batch row forms g = dh_t + dY_t (G), the logits'
gradient e = alpha (S g - <alpha, S g>) / tau (E), du = S^T e and goes back through the gates to
d pre_t (and, for the SR-LSTM, to dc_{t-1}); a padded row passes dh_t and dc_t on whole.
- SR-GRU: d(r h_in) = d c~_t W_c (``mm``), an elementwise kernel for d r~ and r's share of d h_in,
  then dh_{t-1} = z du + (r d(r h_in) + d [z~, r~]_t [W_z; W_r]) * mask.
- SR-LSTM: dh_{t-1} = (d pre_t R) * mask (one ``addmm`` without a mask).
After the loop, single products and reductions: dR = sum_t d pre_t^T h_in (the SR-GRU's W_c
against the saved r h_in), dS = E^T U + A^T G (A the saved alphas, U the u_t), the peepholes' as
sums of d pre * c, and d x_proj = d pre (the input projection's products are autograd's).

The hard sigmoid hs(a) = clip(0.2 a + 0.5, 0, 1) has the gradient 0.2 where 0 <= v <= 1, the
bounds included, as torch's clamp and the CPU kernel have it. Constants that are not exact in
float32 are written as divisions (a / 5, not 0.2 a): Triton would round the literal to float32,
off by 1e-8 in a float64 run.

Covered: lengths, initial states, recurrent dropout and the cell arguments (centroids up to
``MAX_CENTROIDS``, temperature, peepholes). Not covered (the step loop runs): a step
normalisation (``norm``), and more than ``MAX_CENTROIDS`` centroids (one program holds all k
logits). The cells take neither layer norm nor zoneout. No GPU has been lent to this project:
the kernels are tested on the CPU in Triton's interpreter (tests/test_gpu_sr.py) against the
step loop in float64 with gradients; their speed on a GPU has not been measured.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rnnlab.kernels.gpu import _block

try:  # Triton comes with torch's CUDA wheels; the CPU wheel runs the step loop on a GPU
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover (Triton is a dev dependency)
    triton = None

MAX_CENTROIDS = 1024  # k: one program per batch row holds all logits
TILE = 4096  # BLOCK_K * BLOCK_H, the centroid tile a row program holds at once


def available() -> bool:
    return triton is not None


if triton is not None:
    # Only Triton's builtins in the kernels (see rnnlab.kernels.gpu): library helpers (tl.sum,
    # tl.sigmoid, tl.zeros) are jitted at import and do not run in the interpreter.
    # sigmoid(x) = 1 / (1 + exp(-x)), tanh(x) = 2 sigmoid(2x) - 1; row sums and maxima are
    # tl.reduce with these combiners.
    @triton.jit
    def _add(a, b):  # type: ignore[no-untyped-def]
        return a + b

    @triton.jit
    def _max(a, b):  # type: ignore[no-untyped-def]
        return tl.where(a > b, a, b)

    @triton.jit
    def _softmax(logits, kkeep):  # type: ignore[no-untyped-def]
        """softmax over the k valid lanes, the maximum subtracted; 0 on the others."""
        logits = tl.where(kkeep, logits, float("-inf"))
        top = tl.reduce(logits, 0, _max)
        p = tl.where(kkeep, tl.exp(logits - top), 0.0)
        return p / tl.reduce(p, 0, _add)

    @triton.jit
    def _centroid_tile(S, cols, keep, ks, kkeep, H):  # type: ignore[no-untyped-def]
        """The centroids' columns ``cols`` (BLOCK_K, BLOCK_H), 0 outside."""
        at = S + ks[:, None] * H + cols[None, :]
        return tl.load(at, mask=kkeep[:, None] & keep[None, :], other=0.0)

    @triton.jit
    def _srgru_gates(  # type: ignore[no-untyped-def]
        xp, gzr, h_in, valid, acts, rh, H, HAS_VALID: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """v_z, v_r = (x + W h_in) / 5 + 0.5 into ``acts`` (B, 4H) and r h_in into ``rh`` (B, H),
        the candidate product's input. x_proj's rows are z, r, c."""
        b = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        vz = tl.load(xp + b * 3 * H + cols, mask=keep, other=0.0)
        vz = (vz + tl.load(gzr + b * 2 * H + cols, mask=keep, other=0.0)) / 5.0 + 0.5
        vr = tl.load(xp + b * 3 * H + H + cols, mask=keep, other=0.0)
        vr = (vr + tl.load(gzr + b * 2 * H + H + cols, mask=keep, other=0.0)) / 5.0 + 0.5
        r = tl.minimum(tl.maximum(vr, 0.0), 1.0)
        r_h = r * tl.load(h_in + b * H + cols, mask=keep, other=0.0)
        if HAS_VALID:  # a padded row saves zeros
            live = tl.load(valid + b) != 0
            vz = tl.where(live, vz, 0.0)
            vr = tl.where(live, vr, 0.0)
            r_h = tl.where(live, r_h, 0.0)
        tl.store(acts + b * 4 * H + cols, vz, mask=keep)
        tl.store(acts + b * 4 * H + H + cols, vr, mask=keep)
        tl.store(rh + b * H + cols, r_h, mask=keep)

    @triton.jit
    def _srgru_pull(  # type: ignore[no-untyped-def]
        xp, gc, h_prev, S, tau, valid, acts, alphas, h_out, Y_out, H, K,
        HAS_VALID: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        """One batch row: c = tanh(x_c + W_c (r h_in)), u = (1 - z) c + z h_{t-1} (c and u into
        ``acts``), alpha = softmax(S u / tau), h_t = S^T alpha."""
        b = tl.program_id(0)
        ks = tl.arange(0, BLOCK_K)
        kkeep = ks < K
        live = b >= 0  # a true scalar tensor (a Python True would be a constexpr)
        if HAS_VALID:
            live = tl.load(valid + b) != 0
        logits = tl.full([BLOCK_K], 0.0, S.dtype.element_ty)
        for start in range(0, H, BLOCK_H):
            cols = start + tl.arange(0, BLOCK_H)
            keep = cols < H
            c = tl.load(xp + b * 3 * H + 2 * H + cols, mask=keep, other=0.0)
            c += tl.load(gc + b * H + cols, mask=keep, other=0.0)
            c = 2.0 / (1.0 + tl.exp(-2.0 * c)) - 1.0
            z = tl.load(acts + b * 4 * H + cols, mask=keep, other=0.0)
            z = tl.minimum(tl.maximum(z, 0.0), 1.0)
            hp = tl.load(h_prev + b * H + cols, mask=keep, other=0.0)
            u = (1.0 - z) * c + z * hp
            tile = _centroid_tile(S, cols, keep, ks, kkeep, H)
            logits += tl.reduce(tile * u[None, :], 1, _add)
            tl.store(acts + b * 4 * H + 2 * H + cols, tl.where(live, c, 0.0), mask=keep)
            tl.store(acts + b * 4 * H + 3 * H + cols, tl.where(live, u, 0.0), mask=keep)
        alpha = _softmax(logits / tl.load(tau), kkeep)
        tl.store(alphas + b * K + ks, tl.where(live, alpha, 0.0), mask=kkeep)
        for start in range(0, H, BLOCK_H):
            cols = start + tl.arange(0, BLOCK_H)
            keep = cols < H
            tile = _centroid_tile(S, cols, keep, ks, kkeep, H)
            h = tl.reduce(alpha[:, None] * tile, 0, _add)
            hp = tl.load(h_prev + b * H + cols, mask=keep, other=0.0)
            tl.store(h_out + b * H + cols, tl.where(live, h, hp), mask=keep)
            tl.store(Y_out + b * H + cols, tl.where(live, h, 0.0), mask=keep)

    @triton.jit
    def _srlstm_forward_step(  # type: ignore[no-untyped-def]
        pre, peep, c_prev, h_prev, S, tau, valid, acts, c_out, alphas, h_out, Y_out, H, K,
        HAS_PEEP: tl.constexpr, HAS_VALID: tl.constexpr, BLOCK_H: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        """One batch row: i, f, z, o with the peepholes (rows i, f, o of ``peep``), c_t, u =
        o tanh(c_t); acts (B, 5H) i, f, z, o, tanh c_t; alpha = softmax(S u / tau), h_t =
        S^T alpha. ``pre`` (B, 4H) = x_proj_t + h_in R^T."""
        b = tl.program_id(0)
        ks = tl.arange(0, BLOCK_K)
        kkeep = ks < K
        live = b >= 0  # a true scalar tensor (a Python True would be a constexpr)
        if HAS_VALID:
            live = tl.load(valid + b) != 0
        logits = tl.full([BLOCK_K], 0.0, S.dtype.element_ty)
        row = b * 4 * H
        for start in range(0, H, BLOCK_H):
            cols = start + tl.arange(0, BLOCK_H)
            keep = cols < H
            cp = tl.load(c_prev + b * H + cols, mask=keep, other=0.0)
            it = tl.load(pre + row + cols, mask=keep, other=0.0)
            ft = tl.load(pre + row + H + cols, mask=keep, other=0.0)
            zt = tl.load(pre + row + 2 * H + cols, mask=keep, other=0.0)
            ot = tl.load(pre + row + 3 * H + cols, mask=keep, other=0.0)
            if HAS_PEEP:
                it += tl.load(peep + cols, mask=keep, other=0.0) * cp
                ft += tl.load(peep + H + cols, mask=keep, other=0.0) * cp
            it = 1.0 / (1.0 + tl.exp(-it))
            ft = 1.0 / (1.0 + tl.exp(-ft))
            zt = 2.0 / (1.0 + tl.exp(-2.0 * zt)) - 1.0
            ct = ft * cp + it * zt
            if HAS_PEEP:
                ot += tl.load(peep + 2 * H + cols, mask=keep, other=0.0) * ct
            ot = 1.0 / (1.0 + tl.exp(-ot))
            tc = 2.0 / (1.0 + tl.exp(-2.0 * ct)) - 1.0
            tile = _centroid_tile(S, cols, keep, ks, kkeep, H)
            logits += tl.reduce(tile * (ot * tc)[None, :], 1, _add)
            base = b * 5 * H
            tl.store(acts + base + cols, tl.where(live, it, 0.0), mask=keep)
            tl.store(acts + base + H + cols, tl.where(live, ft, 0.0), mask=keep)
            tl.store(acts + base + 2 * H + cols, tl.where(live, zt, 0.0), mask=keep)
            tl.store(acts + base + 3 * H + cols, tl.where(live, ot, 0.0), mask=keep)
            tl.store(acts + base + 4 * H + cols, tl.where(live, tc, 0.0), mask=keep)
            tl.store(c_out + b * H + cols, tl.where(live, ct, cp), mask=keep)
        alpha = _softmax(logits / tl.load(tau), kkeep)
        tl.store(alphas + b * K + ks, tl.where(live, alpha, 0.0), mask=kkeep)
        for start in range(0, H, BLOCK_H):
            cols = start + tl.arange(0, BLOCK_H)
            keep = cols < H
            tile = _centroid_tile(S, cols, keep, ks, kkeep, H)
            h = tl.reduce(alpha[:, None] * tile, 0, _add)
            hp = tl.load(h_prev + b * H + cols, mask=keep, other=0.0)
            tl.store(h_out + b * H + cols, tl.where(live, h, hp), mask=keep)
            tl.store(Y_out + b * H + cols, tl.where(live, h, 0.0), mask=keep)

    @triton.jit
    def _pull_backward(  # type: ignore[no-untyped-def]
        dY, dh, alphas, S, tau, live, G, E, b, H, K, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        """One row's g = dh_t + dY_t into ``G`` and e = alpha (S g - <alpha, S g>) / tau into
        ``E`` (both 0 on a padded row); returns e (BLOCK_K). du = S^T e is the caller's, block
        by block."""
        ks = tl.arange(0, BLOCK_K)
        kkeep = ks < K
        s_g = tl.full([BLOCK_K], 0.0, S.dtype.element_ty)
        for start in range(0, H, BLOCK_H):
            cols = start + tl.arange(0, BLOCK_H)
            keep = cols < H
            g = tl.load(dh + b * H + cols, mask=keep, other=0.0)
            g += tl.load(dY + b * H + cols, mask=keep, other=0.0)
            tl.store(G + b * H + cols, tl.where(live, g, 0.0), mask=keep)
            tile = _centroid_tile(S, cols, keep, ks, kkeep, H)
            s_g += tl.reduce(tile * g[None, :], 1, _add)
        alpha = tl.load(alphas + b * K + ks, mask=kkeep, other=0.0)
        mean = tl.reduce(alpha * s_g, 0, _add)
        e = tl.where(live, alpha * (s_g - mean) / tl.load(tau), 0.0)
        tl.store(E + b * K + ks, e, mask=kkeep)
        return e

    @triton.jit
    def _srgru_back_pull(  # type: ignore[no-untyped-def]
        dY, dh, acts, alphas, h_prev, S, tau, valid, G, E, dpre, direct, H, K,
        HAS_VALID: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        """One batch row back through the pull and u = (1 - z) c + z h_{t-1}: d z~ and d c~
        into ``dpre`` (rows z, c; r's comes after W_c's product) and z du, the part of dh_{t-1}
        outside the products, into ``direct`` (all of dh_t on a padded row)."""
        b = tl.program_id(0)
        ks = tl.arange(0, BLOCK_K)
        kkeep = ks < K
        live = b >= 0  # a true scalar tensor (a Python True would be a constexpr)
        if HAS_VALID:
            live = tl.load(valid + b) != 0
        e = _pull_backward(dY, dh, alphas, S, tau, live, G, E, b, H, K, BLOCK_H, BLOCK_K)
        for start in range(0, H, BLOCK_H):
            cols = start + tl.arange(0, BLOCK_H)
            keep = cols < H
            tile = _centroid_tile(S, cols, keep, ks, kkeep, H)
            du = tl.reduce(e[:, None] * tile, 0, _add)
            vz = tl.load(acts + b * 4 * H + cols, mask=keep, other=0.0)
            c = tl.load(acts + b * 4 * H + 2 * H + cols, mask=keep, other=0.0)
            hp = tl.load(h_prev + b * H + cols, mask=keep, other=0.0)
            z = tl.minimum(tl.maximum(vz, 0.0), 1.0)
            dz = tl.where((vz >= 0.0) & (vz <= 1.0), du * (hp - c) / 5.0, 0.0)  # hs' on [0, 1]
            dz = tl.where(live, dz, 0.0)
            dc = tl.where(live, du * (1.0 - z) * (1.0 - c * c), 0.0)
            d_direct = tl.where(live, du * z, tl.load(dh + b * H + cols, mask=keep, other=0.0))
            tl.store(dpre + b * 3 * H + cols, dz, mask=keep)
            tl.store(dpre + b * 3 * H + 2 * H + cols, dc, mask=keep)
            tl.store(direct + b * H + cols, d_direct, mask=keep)

    @triton.jit
    def _srgru_back_reset(  # type: ignore[no-untyped-def]
        drh, acts, h_in, rmask, dpre, direct, H, HAS_MASK: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """From d(r h_in) = d c~ W_c: d r~ = d(r h_in) h_in hs'(v_r) into ``dpre`` (row r), and
        r d(r h_in) * mask added to ``direct``. (A padded row has d c~ = 0, so both are 0.)"""
        b = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < H
        g = tl.load(drh + b * H + cols, mask=keep, other=0.0)
        vr = tl.load(acts + b * 4 * H + H + cols, mask=keep, other=0.0)
        r = tl.minimum(tl.maximum(vr, 0.0), 1.0)
        h = tl.load(h_in + b * H + cols, mask=keep, other=0.0)
        dr = tl.where((vr >= 0.0) & (vr <= 1.0), g * h / 5.0, 0.0)  # hs' = 0.2 on [0, 1]
        tl.store(dpre + b * 3 * H + H + cols, dr, mask=keep)
        through = g * r
        if HAS_MASK:
            through = through * tl.load(rmask + b * H + cols, mask=keep, other=0.0)
        d_direct = tl.load(direct + b * H + cols, mask=keep, other=0.0) + through
        tl.store(direct + b * H + cols, d_direct, mask=keep)

    @triton.jit
    def _srlstm_backward_step(  # type: ignore[no-untyped-def]
        dY, dh, dc, acts, alphas, c_prev, c_t, peep, S, tau, valid, G, E, dpre, dc_prev,
        direct, H, K, HAS_PEEP: tl.constexpr, HAS_VALID: tl.constexpr, BLOCK_H: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        """One batch row back through the pull and the gates: d pre_t (B, 4H), dc_{t-1}, and
        ``direct``, the part of dh_{t-1} outside the product (dh_t on a padded row, else 0)."""
        b = tl.program_id(0)
        ks = tl.arange(0, BLOCK_K)
        kkeep = ks < K
        live = b >= 0  # a true scalar tensor (a Python True would be a constexpr)
        if HAS_VALID:
            live = tl.load(valid + b) != 0
        e = _pull_backward(dY, dh, alphas, S, tau, live, G, E, b, H, K, BLOCK_H, BLOCK_K)
        base = b * 5 * H
        row = b * 4 * H
        for start in range(0, H, BLOCK_H):
            cols = start + tl.arange(0, BLOCK_H)
            keep = cols < H
            tile = _centroid_tile(S, cols, keep, ks, kkeep, H)
            du = tl.reduce(e[:, None] * tile, 0, _add)
            it = tl.load(acts + base + cols, mask=keep, other=0.0)
            ft = tl.load(acts + base + H + cols, mask=keep, other=0.0)
            zt = tl.load(acts + base + 2 * H + cols, mask=keep, other=0.0)
            ot = tl.load(acts + base + 3 * H + cols, mask=keep, other=0.0)
            tc = tl.load(acts + base + 4 * H + cols, mask=keep, other=0.0)
            cp = tl.load(c_prev + b * H + cols, mask=keep, other=0.0)
            gc_in = tl.load(dc + b * H + cols, mask=keep, other=0.0)
            # u = o tanh(c_t); o = s(o~ + p_o c_t); c_t = f c_{t-1} + i z
            do = du * tc * ot * (1.0 - ot)
            gc = gc_in + du * ot * (1.0 - tc * tc)
            if HAS_PEEP:
                gc += do * tl.load(peep + 2 * H + cols, mask=keep, other=0.0)
            di = gc * zt * it * (1.0 - it)
            df = gc * cp * ft * (1.0 - ft)
            dz = gc * it * (1.0 - zt * zt)
            gcp = gc * ft
            if HAS_PEEP:
                gcp += di * tl.load(peep + cols, mask=keep, other=0.0)
                gcp += df * tl.load(peep + H + cols, mask=keep, other=0.0)
            tl.store(dpre + row + cols, tl.where(live, di, 0.0), mask=keep)
            tl.store(dpre + row + H + cols, tl.where(live, df, 0.0), mask=keep)
            tl.store(dpre + row + 2 * H + cols, tl.where(live, dz, 0.0), mask=keep)
            tl.store(dpre + row + 3 * H + cols, tl.where(live, do, 0.0), mask=keep)
            tl.store(dc_prev + b * H + cols, tl.where(live, gcp, gc_in), mask=keep)
            carried = tl.load(dh + b * H + cols, mask=keep, other=0.0)
            tl.store(direct + b * H + cols, tl.where(live, 0.0, carried), mask=keep)


def _row_blocks(H: int, K: int) -> dict[str, int]:
    """A row program's blocks: all K centroids, H in blocks so that the tile stays ``TILE``."""
    block_k = max(2, triton.next_power_of_2(K))
    block_h = min(triton.next_power_of_2(H), max(2, TILE // block_k))
    return {"BLOCK_H": block_h, "BLOCK_K": block_k}


def _centroid_grad(E: Tensor, U: Tensor, A: Tensor, G: Tensor) -> Tensor:
    """dS = E^T U + A^T G over all steps and rows: E, A (T, B, K); U, G (T, B, H)."""
    K, H = E.shape[-1], G.shape[-1]
    return torch.addmm(E.reshape(-1, K).t() @ U.reshape(-1, H), A.reshape(-1, K).t(),
                       G.reshape(-1, H))  # fmt: skip


def _valid_bytes(valid: Tensor) -> Tensor:
    return valid.to(torch.int8).contiguous() if valid.numel() else valid


class _SRGRUFunction(torch.autograd.Function):
    """SR-GRU, rows z, r, c of weight_hh (3H, H); x_proj (T, B, 3H) without bias."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x_proj: Tensor, weight_hh: Tensor, centroids: Tensor, h0: Tensor,
        valid: Tensor, rmask: Tensor, tau: float,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        T, B, _ = x_proj.shape
        H, K = weight_hh.shape[1], centroids.shape[0]
        has_valid, has_mask = valid.numel() > 0, rmask.numel() > 0
        v8 = _valid_bytes(valid)
        S = centroids.contiguous()
        tau_t = x_proj.new_full((1,), tau)  # a tensor: a float argument would be float32
        W_zr, W_c = weight_hh[: 2 * H].t(), weight_hh[2 * H :].t()
        Y, states, RH = (x_proj.new_empty(T, B, H) for _ in range(3))
        acts = x_proj.new_empty(T, B, 4 * H)  # v_z, v_r, c, u
        alphas = x_proj.new_empty(T, B, K)
        g_zr, g_c = x_proj.new_empty(B, 2 * H), x_proj.new_empty(B, H)
        grid, rows = (B, triton.cdiv(H, _block(H))), _row_blocks(H, K)
        h = h0.contiguous()
        for t in range(T):
            h_in = h * rmask if has_mask else h
            v_t = v8[t] if has_valid else v8
            torch.mm(h_in, W_zr, out=g_zr)
            _srgru_gates[grid](x_proj[t], g_zr, h_in, v_t, acts[t], RH[t], H,
                               HAS_VALID=has_valid, BLOCK=_block(H))  # fmt: skip
            torch.mm(RH[t], W_c, out=g_c)
            _srgru_pull[(B,)](x_proj[t], g_c, h, S, tau_t, v_t, acts[t], alphas[t], states[t],
                              Y[t], H, K, HAS_VALID=has_valid, **rows)  # fmt: skip
            h = states[t]
        ctx.save_for_backward(weight_hh, S, tau_t, h0, v8, rmask, states, acts, alphas, RH)
        return Y, h.clone()

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, dY: Tensor, dhT: Tensor
    ) -> tuple[Tensor | None, ...]:
        weight_hh, S, tau_t, h0, v8, rmask, states, acts, alphas, RH = ctx.saved_tensors
        T, B, H = states.shape
        K = S.shape[0]
        has_valid, has_mask = v8.numel() > 0, rmask.numel() > 0
        W_zr, W_c = weight_hh[: 2 * H], weight_hh[2 * H :]
        dY = dY.contiguous()
        dh = dhT.contiguous().clone()
        dpre = states.new_empty(T, B, 3 * H)  # every row written below
        G, E = torch.empty_like(states), alphas.new_empty(T, B, K)
        direct, d_rh = torch.empty_like(dh), torch.empty_like(dh)
        h_prev_all = torch.cat([h0[None], states[:-1]])[:T]  # (T, B, H), T = 0 too
        h_in_all = h_prev_all * rmask if has_mask else h_prev_all
        grid, rows = (B, triton.cdiv(H, _block(H))), _row_blocks(H, K)
        for t in range(T - 1, -1, -1):
            _srgru_back_pull[(B,)](dY[t], dh, acts[t], alphas[t], h_prev_all[t], S, tau_t,
                                   v8[t] if has_valid else v8, G[t], E[t], dpre[t], direct, H,
                                   K, HAS_VALID=has_valid, **rows)  # fmt: skip
            torch.mm(dpre[t, :, 2 * H :], W_c, out=d_rh)
            _srgru_back_reset[grid](d_rh, acts[t], h_in_all[t], rmask, dpre[t], direct, H,
                                    HAS_MASK=has_mask, BLOCK=_block(H))  # fmt: skip
            through = dpre[t, :, : 2 * H] @ W_zr
            dh = direct + (through * rmask if has_mask else through)
        n = T * B
        d_zr = dpre[..., : 2 * H].reshape(n, 2 * H).t() @ h_in_all.reshape(n, H)
        d_c = dpre[..., 2 * H :].reshape(n, H).t() @ RH.reshape(n, H)
        dS = _centroid_grad(E, acts[..., 3 * H :], alphas, G)
        return dpre, torch.cat([d_zr, d_c]), dS, dh, None, None, None


class _SRLSTMFunction(torch.autograd.Function):
    """SR-LSTM(-P), rows i, f, z, o of weight_hh (4H, H); x_proj (T, B, 4H) with the bias;
    peephole (3, H) rows i, f, o, or empty (the plain SR-LSTM)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x_proj: Tensor, weight_hh: Tensor, peephole: Tensor, centroids: Tensor,
        h0: Tensor, c0: Tensor, valid: Tensor, rmask: Tensor, tau: float,
    ) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        T, B, _ = x_proj.shape
        H, K = weight_hh.shape[1], centroids.shape[0]
        has_valid, has_mask, has_peep = valid.numel() > 0, rmask.numel() > 0, peephole.numel() > 0
        v8 = _valid_bytes(valid)
        S, P = centroids.contiguous(), peephole.contiguous()
        tau_t = x_proj.new_full((1,), tau)  # a tensor: a float argument would be float32
        Y, states, C = (x_proj.new_empty(T, B, H) for _ in range(3))
        acts = x_proj.new_empty(T, B, 5 * H)  # i, f, z, o, tanh c
        alphas = x_proj.new_empty(T, B, K)
        pre = x_proj.new_empty(B, 4 * H)
        rows = _row_blocks(H, K)
        R_t = weight_hh.t()
        h, c = h0.contiguous(), c0.contiguous()
        for t in range(T):
            torch.addmm(x_proj[t], h * rmask if has_mask else h, R_t, out=pre)
            _srlstm_forward_step[(B,)](pre, P, c, h, S, tau_t, v8[t] if has_valid else v8,
                                       acts[t], C[t], alphas[t], states[t], Y[t], H, K,
                                       HAS_PEEP=has_peep, HAS_VALID=has_valid,
                                       **rows)  # fmt: skip
            h, c = states[t], C[t]
        ctx.save_for_backward(weight_hh, P, S, tau_t, h0, c0, v8, rmask, states, C, acts, alphas)
        return Y, h.clone(), c.clone()

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, dY: Tensor, dhT: Tensor, dcT: Tensor
    ) -> tuple[Tensor | None, ...]:
        weight_hh, P, S, tau_t, h0, c0, v8, rmask, states, C, acts, alphas = ctx.saved_tensors
        T, B, H = states.shape
        K = S.shape[0]
        has_valid, has_mask, has_peep = v8.numel() > 0, rmask.numel() > 0, P.numel() > 0
        dY = dY.contiguous()
        dh, dc = dhT.contiguous().clone(), dcT.contiguous().clone()
        dpre = states.new_empty(T, B, 4 * H)  # every row written below
        G, E = torch.empty_like(states), alphas.new_empty(T, B, K)
        direct, dc_prev = torch.empty_like(dh), torch.empty_like(dc)
        c_prev_all = torch.cat([c0[None], C[:-1]])[:T]
        rows = _row_blocks(H, K)
        for t in range(T - 1, -1, -1):
            _srlstm_backward_step[(B,)](dY[t], dh, dc, acts[t], alphas[t], c_prev_all[t], C[t],
                                        P, S, tau_t, v8[t] if has_valid else v8, G[t], E[t],
                                        dpre[t], dc_prev, direct, H, K, HAS_PEEP=has_peep,
                                        HAS_VALID=has_valid, **rows)  # fmt: skip
            if has_mask:
                dh = direct + (dpre[t] @ weight_hh) * rmask
            else:
                dh = torch.addmm(direct, dpre[t], weight_hh)
            dc, dc_prev = dc_prev, dc
        n = T * B
        h_prev_all = torch.cat([h0[None], states[:-1]])[:T]  # (T, B, H), T = 0 too
        h_in_all = h_prev_all * rmask if has_mask else h_prev_all
        dR = dpre.reshape(n, 4 * H).t() @ h_in_all.reshape(n, H)
        U = acts[..., 3 * H : 4 * H] * acts[..., 4 * H :]  # u = o tanh(c)
        dS = _centroid_grad(E, U, alphas, G)
        dP = None
        if has_peep:
            d_i, d_f, d_o = dpre[..., :H], dpre[..., H : 2 * H], dpre[..., 3 * H :]
            dP = torch.stack([(d_i * c_prev_all).sum((0, 1)), (d_f * c_prev_all).sum((0, 1)),
                              (d_o * C).sum((0, 1))])  # fmt: skip
        return dpre, dR, dP, dS, dh, dc, None, None, None


def _covers(cell: Any) -> bool:
    """Whether the kernels compute this cell's layer: no step normalisation, k bounded."""
    return (
        triton is not None
        and cell.step_norms is None
        and (cell.centroids.shape[0] <= MAX_CENTROIDS)
    )


def srgru_sequence(
    cell: Any, x_proj: Tensor, h0: Tensor, valid: Tensor | None, rmask: Tensor | None
) -> tuple[Tensor, tuple[Tensor, ...]] | None:
    """One layer and direction of ``sr-gru``: x_proj (T, B, 3H) rows z, r, c, valid (T, B) bool,
    rmask (B, H) -> outputs (T, B, H), (h_T,); None where the kernels do not apply."""
    if not _covers(cell):
        return None
    e = x_proj.new_empty(0)
    Y, hT = _SRGRUFunction.apply(
        x_proj.contiguous(), cell.weight_hh, cell.centroids, h0,
        e if valid is None else valid, e if rmask is None else rmask.contiguous(),
        float(cell.arg("temperature")),
    )  # fmt: skip
    return Y, (hT,)


def srlstm_sequence(
    cell: Any, x_proj: Tensor, state: tuple[Tensor, ...], valid: Tensor | None,
    rmask: Tensor | None,
) -> tuple[Tensor, tuple[Tensor, ...]] | None:  # fmt: skip
    """One layer and direction of ``sr-lstm``: x_proj (T, B, 4H) rows i, f, z, o with the bias,
    state (h0, c0) -> outputs (T, B, H), (h_T, c_T); None where the kernels do not apply."""
    if not _covers(cell):
        return None
    e = x_proj.new_empty(0)
    peephole = cell.peephole if cell.arg("peepholes") else e
    Y, hT, cT = _SRLSTMFunction.apply(
        x_proj.contiguous(), cell.weight_hh, peephole, cell.centroids, state[0], state[1],
        e if valid is None else valid, e if rmask is None else rmask.contiguous(),
        float(cell.arg("temperature")),
    )  # fmt: skip
    return Y, (hT, cT)
