"""The fused adLIF / RadLIF kernels (csrc/spiking.cpp) as registered torch operators,
``torch.ops.rnnlab.spiking_{forward,backward}``, in the scheme of ``rnnlab.kernels.ops``: the
extension's function, a fake implementation (shapes only) and, for the forward, its autograd
formula. One pair serves both cells: V is empty for adLIF. ``spiking_sequence`` runs one layer
and direction.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rnnlab.kernels.ops import Tensors, _ext, _none, _own, _present


@torch.library.custom_op("rnnlab::spiking_forward", mutates_args=())
def spiking_forward(
    x_proj: Tensor, alpha: Tensor, beta: Tensor, a: Tensor, b: Tensor, V: Tensor, s0: Tensor,
    u0: Tensor, w0: Tensor, valid: Tensor, rmask: Tensor, save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(Y, s_T, u_T, w_T, acts): the spikes of every step (zero on padded steps), the final state
    and what the backward needs (u, w and the drive of every step; empty unless ``save``).
    alpha, beta, a, b (H) come clamped, V (H, H) with its diagonal zeroed (empty for adLIF)."""
    out = _ext().spiking_forward(x_proj, alpha, beta, a, b, V, s0, u0, w0, valid, rmask, save)
    return _own(out, x_proj, alpha, beta, a, b, V, s0, u0, w0, valid, rmask)


@spiking_forward.register_fake
def _(x_proj, alpha, beta, a, b, V, s0, u0, w0, valid, rmask, save):  # type: ignore[no-untyped-def]
    T, B, H = x_proj.shape
    return (
        x_proj.new_empty(T, B, H),
        s0.new_empty(s0.shape),
        u0.new_empty(u0.shape),
        w0.new_empty(w0.shape),
        x_proj.new_empty(T, B, 3 * H) if save else _none(x_proj),
    )


@torch.library.custom_op("rnnlab::spiking_backward", mutates_args=())
def spiking_backward(
    dY: Tensor, dsT: Tensor, duT: Tensor, dwT: Tensor, acts: Tensor, Y: Tensor, s0: Tensor,
    u0: Tensor, w0: Tensor, alpha: Tensor, beta: Tensor, a: Tensor, b: Tensor, V: Tensor,
    valid: Tensor, rmask: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(d x_proj, d alpha, d beta, d a, d b, d V (empty for adLIF), d s0, d u0, d w0), through
    the box-car surrogate d s / d u := 1 on -0.5 < u - 1 <= 0.5."""
    out = _ext().spiking_backward(dY, dsT, duT, dwT, acts, Y, s0, u0, w0, alpha, beta, a, b, V,
                                  valid, rmask)  # fmt: skip
    return _own(out, dY, dsT, duT, dwT, acts, Y, s0, u0, w0, alpha, beta, a, b, V, valid, rmask)


@spiking_backward.register_fake
def _(dY, dsT, duT, dwT, acts, Y, s0, u0, w0, alpha, beta, a, b, V, valid, rmask):  # type: ignore[no-untyped-def]
    return (
        dY.new_empty(dY.shape),
        alpha.new_empty(alpha.shape),
        beta.new_empty(beta.shape),
        a.new_empty(a.shape),
        b.new_empty(b.shape),
        V.new_empty(V.shape) if _present(V) else _none(dY),
        s0.new_empty(s0.shape),
        u0.new_empty(u0.shape),
        w0.new_empty(w0.shape),
    )


def _spiking_setup(ctx: Any, inputs: Tensors, output: Tensors) -> None:
    x_proj, alpha, beta, a, b, V, s0, u0, w0, valid, rmask, save = inputs
    Y, _, _, _, acts = output
    ctx.save_for_backward(acts, Y, s0, u0, w0, alpha, beta, a, b, V, valid, rmask)
    ctx.save = save
    # Absent output gradients stay None: materialised, acts' alone would be a (T, B, 3H) zero fill
    # (a fifth of adLIF's backward).
    ctx.set_materialize_grads(False)


def _spiking_backward(ctx: Any, dY: Tensor | None, dsT: Tensor | None, duT: Tensor | None,
                      dwT: Tensor | None, *_unused: Any) -> tuple[Any, ...]:  # fmt: skip
    if not ctx.save:
        raise RuntimeError("rnnlab::spiking_forward ran with save=False: no backward is possible")
    acts, Y, s0, u0, w0, alpha, beta, a, b, V, valid, rmask = ctx.saved_tensors
    dY = torch.zeros_like(Y) if dY is None else dY
    dsT = torch.zeros_like(s0) if dsT is None else dsT
    duT = torch.zeros_like(u0) if duT is None else duT
    dwT = torch.zeros_like(w0) if dwT is None else dwT
    dX, d_alpha, d_beta, d_a, d_b, dV, ds0, du0, dw0 = torch.ops.rnnlab.spiking_backward(
        dY, dsT, duT, dwT, acts, Y, s0, u0, w0, alpha, beta, a, b, V, valid, rmask
    )
    return (dX, d_alpha, d_beta, d_a, d_b, dV if _present(V) else None, ds0, du0, dw0, None,
            None, None)  # fmt: skip


spiking_forward.register_autograd(_spiking_backward, setup_context=_spiking_setup)


def spiking_sequence(
    x_proj: Tensor,
    coefficients: tuple[Tensor, Tensor, Tensor, Tensor],
    V: Tensor | None,
    state: tuple[Tensor, ...],
    valid: Tensor | None,
    rmask: Tensor | None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One layer and direction of adLIF (V None) or RadLIF: x_proj (T, B, H) the input currents,
    coefficients (alpha, beta, a, b) clamped, V (H, H) with its diagonal zeroed, state
    (s0, u0, w0), valid (T, B) bool, rmask (B, H) -> spikes (T, B, H), (s_T, u_T, w_T)."""
    e = _none(x_proj)
    args = (x_proj, *coefficients, e if V is None else V, *state)
    save = torch.is_grad_enabled() and any(t.requires_grad for t in args)
    Y, sT, uT, wT, _ = torch.ops.rnnlab.spiking_forward(
        *args, e if valid is None else valid, e if rmask is None else rmask, save
    )
    return Y, (sT, uT, wT)
