"""The fused CPU backend: per-layer calls of the kernels (``torch.ops.rnnlab.*``, see
``rnnlab.kernels.ops``), which run the whole time loop of a layer in C++: one recurrent matrix
product per step and the gate arithmetic of the step fused into one pass; its backward keeps only
the recurrent product in the loop and computes the weight gradients after it as single large
products. The extension is built on first use (``rnnlab.kernels.build``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.kernels import ops as _ops  # noqa: F401 (registers torch.ops.rnnlab.*)
from rnnlab.kernels import ops_bru as _ops_bru  # noqa: F401 (the uBRU's)
from rnnlab.kernels.build import available, extension, unavailable_reason

__all__ = ["available", "extension", "unavailable_reason", "lstm_sequence", "gru_sequence",
           "tanh_sequence", "gated_scan", "egru_sequence", "gatel0rd_latent",
           "ncgru_sequence"]  # fmt: skip


def _empty(like: Tensor) -> Tensor:
    return like.new_empty(0)


def lstm_sequence(
    x_proj: Tensor,
    weight_hh: Tensor,
    peephole: Tensor | None,
    weight_gg: Tensor | None,
    state: tuple[Tensor, ...],
    valid: Tensor | None,
    rmask: Tensor | None,
    layout: list[int],
    flags: list[int],
    zone: Tensor | None = None,
    layer_norm: tuple[Tensor, Tensor, Tensor] | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Run one layer and direction: x_proj (T, B, G*H), state (y0, c0[, a0]); valid (T, B) bool;
    zone (T, B, 2H) the zoneout keep masks of y and c (or their expectation p in evaluation);
    layer_norm the gains (g_hh (G*H), g_c (H)) and bias b_c (H) of LN(R y) and LN(c) (x_proj
    then already holds LN(W x)). Returns the outputs (T, B, H) and the final state."""
    e = _empty(x_proj)
    ln = (e, e, e) if layer_norm is None else layer_norm
    args = (
        x_proj,
        weight_hh,
        e if peephole is None else peephole,
        e if weight_gg is None else weight_gg,
        state[0],
        state[1],
        state[2] if len(state) > 2 else e,
        e if valid is None else valid,
        e if rmask is None else rmask,
        e if zone is None else zone,
        *ln,
    )
    save = _needs_grad(*args)  # inference saves no activations
    Y, yT, cT, aT = torch.ops.rnnlab.lstm_forward(*args, layout, flags, save)[:4]
    final = (yT, cT, aT) if len(state) > 2 else (yT, cT)
    return Y, final


def _inputs(x_proj: Tensor, valid: Tensor | None, rmask: Tensor | None) -> tuple[Tensor, Tensor]:
    e = _empty(x_proj)
    return (e if valid is None else valid), (e if rmask is None else rmask)


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def gru_sequence(
    x_proj: Tensor,
    weight_hh: Tensor,
    bias_hh: Tensor | None,
    h0: Tensor,
    valid: Tensor | None,
    rmask: Tensor | None,
    v1: bool,
    zone: Tensor | None = None,
    ln_hh: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One layer and direction of a GRU: x_proj (T, B, 3H) -> outputs (T, B, H), (h_T,);
    zone (T, B, H) the zoneout keep masks (or p in evaluation); ln_hh (3H) the gains of the
    recurrent products' layer norm (x_proj then already holds LN(W x))."""
    valid_t, rmask_t = _inputs(x_proj, valid, rmask)
    b_hh = _empty(x_proj) if bias_hh is None else bias_hh
    z = _empty(x_proj) if zone is None else zone
    g = _empty(x_proj) if ln_hh is None else ln_hh
    args = (x_proj, weight_hh, b_hh, h0, valid_t, rmask_t, z, g)
    save = _needs_grad(x_proj, weight_hh, b_hh, h0, g)
    Y, hT = torch.ops.rnnlab.gru_forward(*args, v1, save)[:2]
    return Y, (hT,)


def tanh_sequence(
    x_proj: Tensor,
    weight_hh: Tensor,
    h0: Tensor,
    valid: Tensor | None,
    rmask: Tensor | None,
    zone: Tensor | None = None,
    ln_hh: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One layer and direction of the tanh RNN: x_proj (T, B, H) -> outputs, (h_T,); ln_hh (H)
    the gain of LN(R h) (x_proj then already holds LN(W x))."""
    valid_t, rmask_t = _inputs(x_proj, valid, rmask)
    z = _empty(x_proj) if zone is None else zone
    g = _empty(x_proj) if ln_hh is None else ln_hh
    args = (x_proj, weight_hh, h0, valid_t, rmask_t, z, g)
    Y, hT = torch.ops.rnnlab.tanh_forward(*args, _needs_grad(x_proj, weight_hh, h0, g))[:2]
    return Y, (hT,)


def gated_scan(
    x_proj: Tensor, h0: Tensor, valid: Tensor | None, kind: int
) -> tuple[Tensor, Tensor]:
    """All states of minGRU (kind 0) or minLSTM (kind 1): x_proj (T, B, G*H), h0 (B, H), valid
    (T, B) bool or None. Returns (h (T, B, H), h_T); h carries the state over padded steps."""
    v = _empty(x_proj) if valid is None else valid
    H, hT = torch.ops.rnnlab.gated_scan_forward(x_proj, h0, v, kind)
    return H, hT


def egru_sequence(
    x_proj: Tensor,
    weight_hh: Tensor,
    bias_hh: Tensor,
    theta: Tensor,
    state: tuple[Tensor, ...],
    valid: Tensor | None,
    rmask: Tensor | None,
    dampening: float,
    support: float,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One layer and direction of EGRU: x_proj (T, B, 3H) rows u, r, z, theta (H) clamped,
    state (y0, c0) -> outputs (T, B, H), (y_T, c_T); the backward uses the pseudo-derivative of
    peak ``dampening`` and half-width 1 / ``support``."""
    valid_t, rmask_t = _inputs(x_proj, valid, rmask)
    y0, c0 = state
    args = (x_proj, weight_hh, bias_hh, theta, y0, c0, valid_t, rmask_t)
    save = _needs_grad(x_proj, weight_hh, bias_hh, theta, y0, c0)
    Y, yT, cT, _ = torch.ops.rnnlab.egru_forward(*args, dampening, support, save)
    return Y, (yT, cT)


def gatel0rd_latent(
    x_gr: Tensor, weight_hh: Tensor, h0: Tensor, L0: Tensor, noise: Tensor | None,
    valid: Tensor | None,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """GateL0RD's latent recurrence: x_gr (T, B, 2H) the gate and recommendation rows, noise
    (T, B, H) sigma eps_t or None -> (h (T, B, H), L (T, B, H)) after every step, both carried
    over padded steps (the caller forms the outputs from h)."""
    valid_t = _empty(x_gr) if valid is None else valid
    n = _empty(x_gr) if noise is None else noise
    save = _needs_grad(x_gr, weight_hh, h0, L0)
    Hs, Ls, _ = torch.ops.rnnlab.gatel0rd_forward(x_gr, weight_hh, h0, L0, n, valid_t, save)
    return Hs, Ls


def ncgru_sequence(
    x_proj: Tensor,
    weight: Tensor,
    modrelu_bias: Tensor,
    h0: Tensor,
    valid: Tensor | None,
    rmask: Tensor | None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One layer and direction of NC-GRU: x_proj (T, B, 3H) rows r, u, c, weight (3H, H) the
    stacked [R_r; R_u; W_c] -> outputs (T, B, H), (h_T,)."""
    valid_t, rmask_t = _inputs(x_proj, valid, rmask)
    args = (x_proj, weight, modrelu_bias, h0, valid_t, rmask_t)
    Y, hT, _ = torch.ops.rnnlab.ncgru_forward(*args, _needs_grad(*args))
    return Y, (hT,)
