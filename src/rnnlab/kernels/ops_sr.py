"""The fused CPU kernels of the state-regularised cells (``csrc/state_regularised.cpp``: SR-GRU
and SR-LSTM(-P)) as registered torch operators, each with a fake implementation and its
autograd formula (the scheme of ``rnnlab.kernels.ops``), and the per-layer calls the cells make.

The operators take every optional input as a tensor, an absent one empty (``(0,)``); ``save``
asks the forward to keep what the backward needs (False for inference); ``tau`` is the softmax's
temperature, a constant of the cell.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rnnlab.kernels.ops import Tensors, _ext, _none, _own


# --- SR-GRU --------------------------------------------------------------------------------------
@torch.library.custom_op("rnnlab::srgru_forward", mutates_args=())
def srgru_forward(
    x_proj: Tensor, weight_hh: Tensor, centroids: Tensor, h0: Tensor, valid: Tensor,
    rmask: Tensor, tau: float, save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(Y, h_T, acts, alphas, RH): the outputs, the final state and what the backward needs
    (empty unless ``save``): acts (T, B, 4H) v_z, v_r, c, u; alphas (T, B, k); RH (T, B, H)."""
    out = _ext().srgru_forward(x_proj, weight_hh, centroids, h0, valid, rmask, tau, save)
    return _own(out, x_proj, weight_hh, centroids, h0, valid, rmask)


@srgru_forward.register_fake
def _(x_proj, weight_hh, centroids, h0, valid, rmask, tau, save):  # type: ignore[no-untyped-def]
    T, B, _ = x_proj.shape
    H, k = weight_hh.shape[1], centroids.shape[0]
    new = x_proj.new_empty
    return (
        new(T, B, H),
        h0.new_empty(h0.shape),
        new(T, B, 4 * H) if save else _none(x_proj),
        new(T, B, k) if save else _none(x_proj),
        new(T, B, H) if save else _none(x_proj),
    )


@torch.library.custom_op("rnnlab::srgru_backward", mutates_args=())
def srgru_backward(
    dY: Tensor, dhT: Tensor, acts: Tensor, alphas: Tensor, RH: Tensor, Y: Tensor, h0: Tensor,
    weight_hh: Tensor, centroids: Tensor, valid: Tensor, rmask: Tensor, tau: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(d x_proj, d weight_hh, d centroids, d h0)."""
    out = _ext().srgru_backward(
        dY, dhT, acts, alphas, RH, Y, h0, weight_hh, centroids, valid, rmask, tau
    )
    return _own(out, dY, dhT, acts, alphas, RH, Y, h0, weight_hh, centroids, valid, rmask)


@srgru_backward.register_fake
def _(dY, dhT, acts, alphas, RH, Y, h0, weight_hh, centroids, valid, rmask, tau):  # type: ignore[no-untyped-def]
    T, B, H = dY.shape
    return (
        dY.new_empty(T, B, 3 * H),
        weight_hh.new_empty(weight_hh.shape),
        centroids.new_empty(centroids.shape),
        h0.new_empty(h0.shape),
    )


def _srgru_setup(ctx: Any, inputs: Tensors, output: Tensors) -> None:
    # Absent output gradients stay None: no zero-filled (T, B, .) tensor for the saved outputs.
    ctx.set_materialize_grads(False)
    x_proj, weight_hh, centroids, h0, valid, rmask, tau, save = inputs
    Y, _, acts, alphas, RH = output
    ctx.save_for_backward(acts, alphas, RH, Y, h0, weight_hh, centroids, valid, rmask)
    ctx.tau, ctx.save = tau, save


def _srgru_backward(ctx: Any, dY: Tensor | None, dhT: Tensor | None,
                    *_unused: Any) -> tuple[Any, ...]:  # fmt: skip
    if not ctx.save:
        raise RuntimeError("rnnlab::srgru_forward ran with save=False: no backward is possible")
    acts, alphas, RH, Y, h0, weight_hh, centroids, valid, rmask = ctx.saved_tensors
    dY = torch.zeros_like(Y) if dY is None else dY
    dhT = torch.zeros_like(h0) if dhT is None else dhT
    dX, dW, dS, dh0 = torch.ops.rnnlab.srgru_backward(
        dY, dhT, acts, alphas, RH, Y, h0, weight_hh, centroids, valid, rmask, ctx.tau
    )
    return dX, dW, dS, dh0, None, None, None, None


srgru_forward.register_autograd(_srgru_backward, setup_context=_srgru_setup)


# --- SR-LSTM(-P) ---------------------------------------------------------------------------------
@torch.library.custom_op("rnnlab::srlstm_forward", mutates_args=())
def srlstm_forward(
    x_proj: Tensor, weight_hh: Tensor, peephole: Tensor, centroids: Tensor, h0: Tensor,
    c0: Tensor, valid: Tensor, rmask: Tensor, tau: float, save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(Y, h_T, c_T, acts, C, alphas): the outputs, the final state and what the backward needs
    (empty unless ``save``): acts (T, B, 5H) i, f, z, o, tanh c; C (T, B, H); alphas (T, B, k).
    x_proj holds the bias; peephole (3, H) rows i, f, o, or empty (the plain SR-LSTM)."""
    out = _ext().srlstm_forward(
        x_proj, weight_hh, peephole, centroids, h0, c0, valid, rmask, tau, save
    )
    return _own(out, x_proj, weight_hh, peephole, centroids, h0, c0, valid, rmask)


@srlstm_forward.register_fake
def _(x_proj, weight_hh, peephole, centroids, h0, c0, valid, rmask, tau, save):  # type: ignore[no-untyped-def]
    T, B, _ = x_proj.shape
    H, k = weight_hh.shape[1], centroids.shape[0]
    new = x_proj.new_empty
    return (
        new(T, B, H),
        h0.new_empty(h0.shape),
        c0.new_empty(c0.shape),
        new(T, B, 5 * H) if save else _none(x_proj),
        new(T, B, H) if save else _none(x_proj),
        new(T, B, k) if save else _none(x_proj),
    )


@torch.library.custom_op("rnnlab::srlstm_backward", mutates_args=())
def srlstm_backward(
    dY: Tensor, dhT: Tensor, dcT: Tensor, acts: Tensor, C: Tensor, alphas: Tensor, Y: Tensor,
    h0: Tensor, c0: Tensor, weight_hh: Tensor, peephole: Tensor, centroids: Tensor,
    valid: Tensor, rmask: Tensor, tau: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(d x_proj, d weight_hh, d peephole (empty where absent), d centroids, d h0, d c0)."""
    out = _ext().srlstm_backward(
        dY, dhT, dcT, acts, C, alphas, Y, h0, c0, weight_hh, peephole, centroids, valid, rmask,
        tau,
    )  # fmt: skip
    return _own(out, dY, dhT, dcT, acts, C, alphas, Y, h0, c0, weight_hh, peephole, centroids,
                valid, rmask)  # fmt: skip


@srlstm_backward.register_fake
def _(dY, dhT, dcT, acts, C, alphas, Y, h0, c0, weight_hh, peephole, centroids, valid, rmask,
      tau):  # type: ignore[no-untyped-def]  # fmt: skip
    T, B, H = dY.shape
    return (
        dY.new_empty(T, B, 4 * H),
        weight_hh.new_empty(weight_hh.shape),
        peephole.new_empty(peephole.shape),
        centroids.new_empty(centroids.shape),
        h0.new_empty(h0.shape),
        c0.new_empty(c0.shape),
    )


def _srlstm_setup(ctx: Any, inputs: Tensors, output: Tensors) -> None:
    # Absent output gradients stay None: no zero-filled (T, B, .) tensor for the saved outputs.
    ctx.set_materialize_grads(False)
    x_proj, weight_hh, peephole, centroids, h0, c0, valid, rmask, tau, save = inputs
    Y, _, _, acts, C, alphas = output
    ctx.save_for_backward(acts, C, alphas, Y, h0, c0, weight_hh, peephole, centroids, valid,
                          rmask)  # fmt: skip
    ctx.tau, ctx.save = tau, save


def _srlstm_backward(ctx: Any, dY: Tensor | None, dhT: Tensor | None, dcT: Tensor | None,
                     *_unused: Any) -> tuple[Any, ...]:  # fmt: skip
    if not ctx.save:
        raise RuntimeError("rnnlab::srlstm_forward ran with save=False: no backward is possible")
    acts, C, alphas, Y, h0, c0, weight_hh, peephole, centroids, valid, rmask = ctx.saved_tensors
    dY = torch.zeros_like(Y) if dY is None else dY
    dhT = torch.zeros_like(h0) if dhT is None else dhT
    dcT = torch.zeros_like(c0) if dcT is None else dcT
    dX, dR, dP, dS, dh0, dc0 = torch.ops.rnnlab.srlstm_backward(
        dY, dhT, dcT, acts, C, alphas, Y, h0, c0, weight_hh, peephole, centroids, valid, rmask,
        ctx.tau,
    )  # fmt: skip
    return dX, dR, dP, dS, dh0, dc0, None, None, None, None


srlstm_forward.register_autograd(_srlstm_backward, setup_context=_srlstm_setup)


# --- the per-layer calls -------------------------------------------------------------------------
def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _optional(t: Tensor | None, like: Tensor) -> Tensor:
    return like.new_empty(0) if t is None else t


def srgru_sequence(
    x_proj: Tensor, weight_hh: Tensor, centroids: Tensor, tau: float, h0: Tensor,
    valid: Tensor | None, rmask: Tensor | None,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """One layer and direction of SR-GRU: x_proj (T, B, 3H) rows z, r, c, centroids (k, H),
    valid (T, B) bool -> outputs (T, B, H), h_T."""
    args = (x_proj, weight_hh, centroids, h0, _optional(valid, x_proj), _optional(rmask, x_proj))
    save = _needs_grad(x_proj, weight_hh, centroids, h0)  # inference saves no activations
    Y, hT = torch.ops.rnnlab.srgru_forward(*args, tau, save)[:2]
    return Y, hT


def srlstm_sequence(
    x_proj: Tensor, weight_hh: Tensor, peephole: Tensor | None, centroids: Tensor, tau: float,
    state: tuple[Tensor, ...], valid: Tensor | None, rmask: Tensor | None,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:  # fmt: skip
    """One layer and direction of SR-LSTM(-P): x_proj (T, B, 4H) rows i, f, z, o with the bias,
    peephole (3, H) or None, state (h0, c0) -> outputs (T, B, H), (h_T, c_T)."""
    h0, c0 = state
    p = _optional(peephole, x_proj)
    args = (x_proj, weight_hh, p, centroids, h0, c0, _optional(valid, x_proj),
            _optional(rmask, x_proj))  # fmt: skip
    save = _needs_grad(x_proj, weight_hh, p, centroids, h0, c0)
    Y, hT, cT = torch.ops.rnnlab.srlstm_forward(*args, tau, save)[:3]
    return Y, (hT, cT)
