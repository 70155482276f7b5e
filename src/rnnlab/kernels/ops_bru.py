"""The uBRU's fused CPU kernels (``csrc/bru.cpp``) as registered torch operators, as
``rnnlab.kernels.ops`` registers the others: each with a fake implementation and its autograd
formula (the matching backward operator), so that ``torch.compile(fullgraph=True)`` and
``torch.export`` trace a layer as two nodes with T dynamic.

- ``rnnlab::bru_filter_forward(x_proj, p1, p2, a0, valid) -> (Y, a_T)``: the filter recursion
  over all steps; x_proj (T, B, H) = W x, p1, p2 (H) the transition probabilities, a0 (B, H),
  valid (T, B) bool or empty (every step). Its backward gives d x_proj, d p1, d p2, d a0.
- ``rnnlab::bru_smooth_forward(filtered, p1, p2, lengths) -> gamma``: the smoothing recursion
  from each sequence's last valid step; lengths (B) int64 or empty (all T). Its backward gives
  d filtered, d p1, d p2.

The operators save no activations: each backward recomputes q_t (and r_t) from its forward's
inputs and outputs, so forward and inference are the same call.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rnnlab.kernels.ops import _ext, _none, _own


@torch.library.custom_op("rnnlab::bru_filter_forward", mutates_args=())
def bru_filter_forward(
    x_proj: Tensor, p1: Tensor, p2: Tensor, a0: Tensor, valid: Tensor
) -> tuple[Tensor, Tensor]:
    """(Y, a_T): the filtered posteriors (T, B, H), 0 on padded steps, and the final state."""
    out = _ext().bru_filter_forward(x_proj, p1, p2, a0, valid)
    return _own(out, x_proj, p1, p2, a0, valid)


@bru_filter_forward.register_fake
def _(x_proj, p1, p2, a0, valid):  # type: ignore[no-untyped-def]
    T, B, H = x_proj.shape
    return x_proj.new_empty(T, B, H), x_proj.new_empty(B, H)


@torch.library.custom_op("rnnlab::bru_filter_backward", mutates_args=())
def bru_filter_backward(
    dY: Tensor, daT: Tensor, x_proj: Tensor, Y: Tensor, p1: Tensor, p2: Tensor, a0: Tensor,
    valid: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(d x_proj, d p1, d p2, d a0)."""
    out = _ext().bru_filter_backward(dY, daT, x_proj, Y, p1, p2, a0, valid)
    return _own(out, dY, daT, x_proj, Y, p1, p2, a0, valid)


@bru_filter_backward.register_fake
def _(dY, daT, x_proj, Y, p1, p2, a0, valid):  # type: ignore[no-untyped-def]
    T, B, H = x_proj.shape
    return x_proj.new_empty(T, B, H), p1.new_empty(H), p2.new_empty(H), x_proj.new_empty(B, H)


def _filter_setup(ctx: Any, inputs: tuple[Tensor, ...], output: tuple[Tensor, ...]) -> None:
    x_proj, p1, p2, a0, valid = inputs
    ctx.save_for_backward(x_proj, output[0], p1, p2, a0, valid)


def _filter_backward(ctx: Any, dY: Tensor | None, daT: Tensor | None) -> tuple[Any, ...]:
    x_proj, Y, p1, p2, a0, valid = ctx.saved_tensors
    dY = torch.zeros_like(Y) if dY is None else dY
    daT = Y.new_zeros(Y.shape[1:]) if daT is None else daT
    dX, dp1, dp2, da0 = torch.ops.rnnlab.bru_filter_backward(dY, daT, x_proj, Y, p1, p2, a0, valid)
    return dX, dp1, dp2, da0, None


bru_filter_forward.register_autograd(_filter_backward, setup_context=_filter_setup)


@torch.library.custom_op("rnnlab::bru_smooth_forward", mutates_args=())
def bru_smooth_forward(filtered: Tensor, p1: Tensor, p2: Tensor, lengths: Tensor) -> Tensor:
    """gamma (T, B, H): the smoothed posteriors, 0 past each sequence's length."""
    out = _ext().bru_smooth_forward(filtered, p1, p2, lengths)
    return _own([out], filtered, p1, p2, lengths)[0]


@bru_smooth_forward.register_fake
def _(filtered, p1, p2, lengths):  # type: ignore[no-untyped-def]
    return filtered.new_empty(filtered.shape)


@torch.library.custom_op("rnnlab::bru_smooth_backward", mutates_args=())
def bru_smooth_backward(
    dgamma: Tensor, filtered: Tensor, gamma: Tensor, p1: Tensor, p2: Tensor, lengths: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(d filtered, d p1, d p2)."""
    out = _ext().bru_smooth_backward(dgamma, filtered, gamma, p1, p2, lengths)
    return _own(out, dgamma, filtered, gamma, p1, p2, lengths)


@bru_smooth_backward.register_fake
def _(dgamma, filtered, gamma, p1, p2, lengths):  # type: ignore[no-untyped-def]
    return filtered.new_empty(filtered.shape), p1.new_empty(p1.shape), p2.new_empty(p2.shape)


def _smooth_setup(ctx: Any, inputs: tuple[Tensor, ...], output: Tensor) -> None:
    filtered, p1, p2, lengths = inputs
    ctx.save_for_backward(filtered, output, p1, p2, lengths)


def _smooth_backward(ctx: Any, dgamma: Tensor) -> tuple[Any, ...]:
    filtered, gamma, p1, p2, lengths = ctx.saved_tensors
    d_filtered, dp1, dp2 = torch.ops.rnnlab.bru_smooth_backward(
        dgamma, filtered, gamma, p1, p2, lengths
    )
    return d_filtered, dp1, dp2, None


bru_smooth_forward.register_autograd(_smooth_backward, setup_context=_smooth_setup)


def filter_sequence(
    x_proj: Tensor, p1: Tensor, p2: Tensor, a0: Tensor, valid: Tensor | None
) -> tuple[Tensor, Tensor]:
    """One layer and direction of the uBRU's filter: x_proj (T, B, H), p1, p2 (H), a0 (B, H),
    valid (T, B) bool or None -> (filtered posteriors (T, B, H), a_T (B, H))."""
    v = _none(x_proj) if valid is None else valid
    Y, aT = torch.ops.rnnlab.bru_filter_forward(x_proj, p1, p2, a0, v)
    return Y, aT


def smooth_sequence(filtered: Tensor, p1: Tensor, p2: Tensor, lengths: Tensor | None) -> Tensor:
    """The smoothing recursion over filtered posteriors (T, B, H), each sequence from its last
    step (``lengths`` (B), or None for all T); padded steps come back as zeros."""
    n = _none(filtered).long() if lengths is None else lengths.to(torch.int64)
    out: Tensor = torch.ops.rnnlab.bru_smooth_forward(filtered, p1, p2, n)
    return out
