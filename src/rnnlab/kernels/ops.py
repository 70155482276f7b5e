"""The fused CPU kernels as registered torch operators (``torch.ops.rnnlab.*``).

Each kernel of the C++ extension (``rnnlab.kernels.cpu``) is a ``torch.library`` operator with
three parts, so that ``torch.compile(fullgraph=True)`` and ``torch.export`` trace through it as one
node instead of breaking the graph around an opaque call:

- the CPU implementation: the extension's function (built on first call: ``kernels.build``);
- a fake implementation: the shapes, dtypes and devices of its outputs from those of its inputs,
  with no computation, for tracing with symbolic (dynamic) sequence lengths and batch sizes;
- for each forward operator, its autograd formula: the matching backward operator (itself an
  operator with a fake implementation, so that a compiled backward traces too).

The operators take every optional input as a tensor; an absent one is an empty tensor (``(0,)``),
as the extension expects. ``save`` asks the forward to keep what the backward needs; it is False
for inference, where nothing is saved. The shapes below mirror the C++ allocations one for one;
``tests/test_compile.py`` checks every operator with ``torch.library.opcheck`` (fake against real,
autograd registration, schema) over every cell's kernel and option.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rnnlab.kernels.build import extension, unavailable_reason

Tensors = tuple[Tensor, ...]


def _ext() -> Any:
    ext = extension()
    if ext is None:  # only reached where a fused path was chosen, which needs the extension
        raise RuntimeError(f"the fused CPU kernels are unavailable: {unavailable_reason()}")
    return ext


def _own(out: list[Tensor], *inputs: Any) -> Any:
    """The extension's outputs as an operator must return them: no output is an input or shares
    memory with one or with another output (the extension returns one empty tensor for several
    absent gradients, for instance). Empty ones are made afresh; any other shared one is copied."""
    seen = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, Tensor) and t.numel()}
    result = []
    for t in out:
        if t.numel() == 0:
            t = t.new_empty(t.shape)
        elif t.untyped_storage().data_ptr() in seen:
            t = t.clone()
        else:
            seen.add(t.untyped_storage().data_ptr())
        result.append(t)
    return tuple(result)


def _present(t: Tensor) -> bool:
    """An optional input that was given (absent ones are empty, shape (0,)). Decided by the
    rank first, so that a present tensor with a symbolic length adds no guard."""
    return t.dim() > 1 or t.shape[0] != 0


def _none(like: Tensor) -> Tensor:
    return like.new_empty(0)


# --- the LSTM family -----------------------------------------------------------------------------
@torch.library.custom_op("rnnlab::lstm_forward", mutates_args=())
def lstm_forward(
    x_proj: Tensor, weight_hh: Tensor, peephole: Tensor, weight_gg: Tensor, y0: Tensor,
    c0: Tensor, a0: Tensor, valid: Tensor, rmask: Tensor, zone: Tensor, ln_hh: Tensor,
    ln_c_weight: Tensor, ln_c_bias: Tensor, layout: list[int], flags: list[int], save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(Y, y_T, c_T, a_T, acts, C, Chat, Rhat, RstdR): the outputs, the final state (a_T:
    FGR's gate activations, else empty) and what the backward needs (empty unless ``save``)."""
    out = _ext().lstm_forward(
        x_proj,
        weight_hh,
        peephole,
        weight_gg,
        y0,
        c0,
        a0,
        valid,
        rmask,
        zone,
        ln_hh,
        ln_c_weight,
        ln_c_bias,
        layout,
        flags,
        save,
    )
    return _own(
        out,
        x_proj,
        weight_hh,
        peephole,
        weight_gg,
        y0,
        c0,
        a0,
        valid,
        rmask,
        zone,
        ln_hh,
        ln_c_weight,
        ln_c_bias,
        layout,
        flags,
        save,
    )


@lstm_forward.register_fake
def _(x_proj, weight_hh, peephole, weight_gg, y0, c0, a0, valid, rmask, zone, ln_hh,
      ln_c_weight, ln_c_bias, layout, flags, save):  # type: ignore[no-untyped-def]  # fmt: skip
    T, B, GH = x_proj.shape
    H = weight_hh.shape[1]
    fgr, ln_r = bool(flags[3]), _present(ln_hh)
    new = x_proj.new_empty
    return (
        new(T, B, H),
        y0.new_empty(y0.shape),
        c0.new_empty(c0.shape),
        a0.new_empty(a0.shape) if fgr else _none(x_proj),
        new(T, B, 4 * H) if save else _none(x_proj),
        new(T, B, H) if save else _none(x_proj),
        new(T, B, H) if save and _present(zone) else _none(x_proj),
        new(T, B, GH) if save and ln_r else _none(x_proj),
        new(T, B) if save and ln_r else _none(x_proj),
    )


@torch.library.custom_op("rnnlab::lstm_backward", mutates_args=())
def lstm_backward(
    dY: Tensor, dyT: Tensor, dcT: Tensor, daT: Tensor, acts: Tensor, C: Tensor, Y: Tensor,
    y0: Tensor, c0: Tensor, a0: Tensor, weight_hh: Tensor, peephole: Tensor, weight_gg: Tensor,
    valid: Tensor, rmask: Tensor, zone: Tensor, Chat: Tensor, ln_hh: Tensor, ln_c_weight: Tensor,
    ln_c_bias: Tensor, Rhat: Tensor, RstdR: Tensor, layout: list[int], flags: list[int],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
           Tensor]:  # fmt: skip
    """(d x_proj, d R, d peephole, d W_gg, d y0, d c0, d a0, d g_hh, d g_c, d b_c); the
    gradients of absent inputs are empty."""
    out = _ext().lstm_backward(
        dY,
        dyT,
        dcT,
        daT,
        acts,
        C,
        Y,
        y0,
        c0,
        a0,
        weight_hh,
        peephole,
        weight_gg,
        valid,
        rmask,
        zone,
        Chat,
        ln_hh,
        ln_c_weight,
        ln_c_bias,
        Rhat,
        RstdR,
        layout,
        flags,
    )
    return _own(
        out,
        dY,
        dyT,
        dcT,
        daT,
        acts,
        C,
        Y,
        y0,
        c0,
        a0,
        weight_hh,
        peephole,
        weight_gg,
        valid,
        rmask,
        zone,
        Chat,
        ln_hh,
        ln_c_weight,
        ln_c_bias,
        Rhat,
        RstdR,
        layout,
        flags,
    )


@lstm_backward.register_fake
def _(dY, dyT, dcT, daT, acts, C, Y, y0, c0, a0, weight_hh, peephole, weight_gg, valid, rmask,
      zone, Chat, ln_hh, ln_c_weight, ln_c_bias, Rhat, RstdR, layout, flags):  # type: ignore[no-untyped-def]  # fmt: skip
    T, B, _ = dY.shape
    GH = weight_hh.shape[0]
    fgr = bool(flags[3])

    def like(t: Tensor, given: bool) -> Tensor:
        return t.new_empty(t.shape) if given else _none(dY)

    return (
        dY.new_empty(T, B, GH),
        weight_hh.new_empty(weight_hh.shape),
        like(peephole, _present(peephole)),
        like(weight_gg, fgr),
        y0.new_empty(y0.shape),
        c0.new_empty(c0.shape),
        like(a0, fgr),
        like(ln_hh, _present(ln_hh)),
        like(ln_c_weight, _present(ln_c_weight)),
        like(ln_c_bias, _present(ln_c_weight)),
    )


def _lstm_setup(ctx: Any, inputs: Tensors, output: Tensors) -> None:
    # Absent output gradients stay None: no zero-filled (T, B, .) tensor for the saved outputs.
    ctx.set_materialize_grads(False)
    (x_proj, weight_hh, peephole, weight_gg, y0, c0, a0, valid, rmask, zone, ln_hh, ln_c_weight,
     ln_c_bias, layout, flags, save) = inputs  # fmt: skip
    Y, _, _, _, acts, C, Chat, Rhat, RstdR = output
    ctx.save_for_backward(acts, C, Y, y0, c0, a0, weight_hh, peephole, weight_gg, valid, rmask,
                          zone, Chat, ln_hh, ln_c_weight, ln_c_bias, Rhat, RstdR)  # fmt: skip
    ctx.layout, ctx.flags, ctx.save = layout, flags, save


def _lstm_backward(ctx: Any, dY: Tensor | None, dyT: Tensor | None, dcT: Tensor | None,
                   daT: Tensor | None, *_unused: Any) -> tuple[Any, ...]:  # fmt: skip
    if not ctx.save:
        raise RuntimeError("rnnlab::lstm_forward ran with save=False: no backward is possible")
    (acts, C, Y, y0, c0, a0, weight_hh, peephole, weight_gg, valid, rmask, zone, Chat, ln_hh,
     ln_c_weight, ln_c_bias, Rhat, RstdR) = ctx.saved_tensors  # fmt: skip
    fgr = bool(ctx.flags[3])
    dY = torch.zeros_like(Y) if dY is None else dY
    dyT = torch.zeros_like(y0) if dyT is None else dyT
    dcT = torch.zeros_like(c0) if dcT is None else dcT
    daT = (torch.zeros_like(a0) if daT is None else daT) if fgr else _none(Y)
    d = torch.ops.rnnlab.lstm_backward(
        dY, dyT, dcT, daT, acts, C, Y, y0, c0, a0, weight_hh, peephole, weight_gg, valid,
        rmask, zone, Chat, ln_hh, ln_c_weight, ln_c_bias, Rhat, RstdR, ctx.layout, ctx.flags,
    )  # fmt: skip
    d_xproj, dR, dP, dWgg, dy0, dc0, da0, dg_hh, dg_c, db_c = d
    present = _present
    return (
        d_xproj, dR, dP if present(peephole) else None, dWgg if fgr else None, dy0, dc0,
        da0 if fgr else None, None, None, None, dg_hh if present(ln_hh) else None,
        dg_c if present(ln_c_weight) else None, db_c if present(ln_c_bias) else None,
        None, None, None,
    )  # fmt: skip


lstm_forward.register_autograd(_lstm_backward, setup_context=_lstm_setup)


# --- the GRUs ------------------------------------------------------------------------------------
@torch.library.custom_op("rnnlab::gru_forward", mutates_args=())
def gru_forward(
    x_proj: Tensor, weight_hh: Tensor, bias_hh: Tensor, h0: Tensor, valid: Tensor, rmask: Tensor,
    zone: Tensor, ln_hh: Tensor, v1: bool, save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(Y, h_T, acts, Rhat, RstdR, RhatN, RstdN); torch's GRU, or Chung et al.'s with ``v1``."""
    out = _ext().gru_forward(x_proj, weight_hh, bias_hh, h0, valid, rmask, zone, ln_hh, v1, save)
    return _own(out, x_proj, weight_hh, bias_hh, h0, valid, rmask, zone, ln_hh, v1, save)


@gru_forward.register_fake
def _(x_proj, weight_hh, bias_hh, h0, valid, rmask, zone, ln_hh, v1, save):  # type: ignore[no-untyped-def]
    T, B, _ = x_proj.shape
    H = weight_hh.shape[1]
    ln = _present(ln_hh)
    new = x_proj.new_empty
    width = 2 * H if v1 else 3 * H
    return (
        new(T, B, H),
        h0.new_empty(h0.shape),
        new(T, B, 4 * H) if save else _none(x_proj),
        new(T, B, width) if save and ln else _none(x_proj),
        new(T, B) if save and ln else _none(x_proj),
        new(T, B, H) if save and ln and v1 else _none(x_proj),
        new(T, B) if save and ln and v1 else _none(x_proj),
    )


@torch.library.custom_op("rnnlab::gru_backward", mutates_args=())
def gru_backward(
    dY: Tensor, dhT: Tensor, acts: Tensor, Y: Tensor, h0: Tensor, weight_hh: Tensor,
    valid: Tensor, rmask: Tensor, zone: Tensor, ln_hh: Tensor, Rhat: Tensor, RstdR: Tensor,
    RhatN: Tensor, RstdN: Tensor, v1: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(d x_proj, d R, d bias_hh (empty for v1), d h0, d g_hh (empty without layer norm))."""
    out = _ext().gru_backward(
        dY, dhT, acts, Y, h0, weight_hh, valid, rmask, zone, ln_hh, Rhat, RstdR, RhatN, RstdN, v1
    )
    return _own(
        out,
        dY,
        dhT,
        acts,
        Y,
        h0,
        weight_hh,
        valid,
        rmask,
        zone,
        ln_hh,
        Rhat,
        RstdR,
        RhatN,
        RstdN,
        v1,
    )


@gru_backward.register_fake
def _(dY, dhT, acts, Y, h0, weight_hh, valid, rmask, zone, ln_hh, Rhat, RstdR, RhatN, RstdN, v1):  # type: ignore[no-untyped-def]
    T, B, H = dY.shape
    return (
        dY.new_empty(T, B, 3 * H),
        weight_hh.new_empty(weight_hh.shape),
        _none(dY) if v1 else dY.new_empty(3 * H),
        h0.new_empty(h0.shape),
        ln_hh.new_empty(ln_hh.shape) if _present(ln_hh) else _none(dY),
    )


def _gru_setup(ctx: Any, inputs: Tensors, output: Tensors) -> None:
    # Absent output gradients stay None: no zero-filled (T, B, .) tensor for the saved outputs.
    ctx.set_materialize_grads(False)
    x_proj, weight_hh, bias_hh, h0, valid, rmask, zone, ln_hh, v1, save = inputs
    Y, _, acts, Rhat, RstdR, RhatN, RstdN = output
    ctx.save_for_backward(acts, Y, h0, weight_hh, valid, rmask, zone, ln_hh, Rhat, RstdR, RhatN,
                          RstdN)  # fmt: skip
    ctx.v1, ctx.save, ctx.has_bias = v1, save, _present(bias_hh)


def _gru_backward(ctx: Any, dY: Tensor | None, dhT: Tensor | None,
                  *_unused: Any) -> tuple[Any, ...]:  # fmt: skip
    if not ctx.save:
        raise RuntimeError("rnnlab::gru_forward ran with save=False: no backward is possible")
    acts, Y, h0, weight_hh, valid, rmask, zone, ln_hh, *norm = ctx.saved_tensors
    dY = torch.zeros_like(Y) if dY is None else dY
    dhT = torch.zeros_like(h0) if dhT is None else dhT
    dX, dR, d_bias, dh0, dg = torch.ops.rnnlab.gru_backward(
        dY, dhT, acts, Y, h0, weight_hh, valid, rmask, zone, ln_hh, *norm, ctx.v1
    )
    return (dX, dR, None if ctx.v1 or not ctx.has_bias else d_bias, dh0, None, None, None,
            dg if _present(ln_hh) else None, None, None)  # fmt: skip


gru_forward.register_autograd(_gru_backward, setup_context=_gru_setup)


# --- tanh ----------------------------------------------------------------------------------------
@torch.library.custom_op("rnnlab::tanh_forward", mutates_args=())
def tanh_forward(
    x_proj: Tensor, weight_hh: Tensor, h0: Tensor, valid: Tensor, rmask: Tensor, zone: Tensor,
    ln_hh: Tensor, save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(Y, h_T, Yhat (the unzoned outputs, with zoneout), Rhat, RstdR)."""
    out = _ext().tanh_forward(x_proj, weight_hh, h0, valid, rmask, zone, ln_hh, save)
    return _own(out, x_proj, weight_hh, h0, valid, rmask, zone, ln_hh, save)


@tanh_forward.register_fake
def _(x_proj, weight_hh, h0, valid, rmask, zone, ln_hh, save):  # type: ignore[no-untyped-def]
    T, B, _ = x_proj.shape
    H = weight_hh.shape[1]
    ln = _present(ln_hh)
    new = x_proj.new_empty
    return (
        new(T, B, H),
        h0.new_empty(h0.shape),
        new(T, B, H) if _present(zone) else _none(x_proj),
        new(T, B, H) if save and ln else _none(x_proj),
        new(T, B) if save and ln else _none(x_proj),
    )


@torch.library.custom_op("rnnlab::tanh_backward", mutates_args=())
def tanh_backward(
    dY: Tensor, dhT: Tensor, Y: Tensor, h0: Tensor, weight_hh: Tensor, valid: Tensor,
    rmask: Tensor, zone: Tensor, Yhat: Tensor, ln_hh: Tensor, Rhat: Tensor, RstdR: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(d x_proj, d R, d h0, d g_hh (empty without layer norm))."""
    out = _ext().tanh_backward(
        dY, dhT, Y, h0, weight_hh, valid, rmask, zone, Yhat, ln_hh, Rhat, RstdR
    )
    return _own(out, dY, dhT, Y, h0, weight_hh, valid, rmask, zone, Yhat, ln_hh, Rhat, RstdR)


@tanh_backward.register_fake
def _(dY, dhT, Y, h0, weight_hh, valid, rmask, zone, Yhat, ln_hh, Rhat, RstdR):  # type: ignore[no-untyped-def]
    return (
        dY.new_empty(dY.shape),
        weight_hh.new_empty(weight_hh.shape),
        h0.new_empty(h0.shape),
        ln_hh.new_empty(ln_hh.shape) if _present(ln_hh) else _none(dY),
    )


def _tanh_setup(ctx: Any, inputs: Tensors, output: Tensors) -> None:
    # Absent output gradients stay None: no zero-filled (T, B, .) tensor for the saved outputs.
    ctx.set_materialize_grads(False)
    x_proj, weight_hh, h0, valid, rmask, zone, ln_hh, save = inputs
    Y, _, Yhat, Rhat, RstdR = output
    ctx.save_for_backward(Y, h0, weight_hh, valid, rmask, zone, Yhat, ln_hh, Rhat, RstdR)
    ctx.save = save


def _tanh_backward(ctx: Any, dY: Tensor | None, dhT: Tensor | None,
                   *_unused: Any) -> tuple[Any, ...]:  # fmt: skip
    if not ctx.save:
        raise RuntimeError("rnnlab::tanh_forward ran with save=False: no backward is possible")
    Y, h0, weight_hh, valid, rmask, zone, Yhat, ln_hh, Rhat, RstdR = ctx.saved_tensors
    dY = torch.zeros_like(Y) if dY is None else dY
    dhT = torch.zeros_like(h0) if dhT is None else dhT
    dX, dR, dh0, dg = torch.ops.rnnlab.tanh_backward(
        dY, dhT, Y, h0, weight_hh, valid, rmask, zone, Yhat, ln_hh, Rhat, RstdR
    )
    return dX, dR, dh0, None, None, None, dg if _present(ln_hh) else None, None


tanh_forward.register_autograd(_tanh_backward, setup_context=_tanh_setup)


# --- minGRU / minLSTM ----------------------------------------------------------------------------
@torch.library.custom_op("rnnlab::gated_scan_forward", mutates_args=())
def gated_scan_forward(
    x_proj: Tensor, h0: Tensor, valid: Tensor, kind: int
) -> tuple[Tensor, Tensor]:
    """(h (T, B, H), h_T) of minGRU (kind 0) or minLSTM (kind 1)."""
    out = _ext().gated_scan_forward(x_proj, h0, valid, kind)
    return _own(out, x_proj, h0, valid, kind)


@gated_scan_forward.register_fake
def _(x_proj, h0, valid, kind):  # type: ignore[no-untyped-def]
    T, B, _ = x_proj.shape
    return x_proj.new_empty(T, B, h0.shape[1]), h0.new_empty(h0.shape)


@torch.library.custom_op("rnnlab::gated_scan_backward", mutates_args=())
def gated_scan_backward(
    dH: Tensor, dhT: Tensor, x_proj: Tensor, H_all: Tensor, h0: Tensor, valid: Tensor, kind: int
) -> tuple[Tensor, Tensor]:
    """(d x_proj, d h0)."""
    out = _ext().gated_scan_backward(dH, dhT, x_proj, H_all, h0, valid, kind)
    return _own(out, dH, dhT, x_proj, H_all, h0, valid, kind)


@gated_scan_backward.register_fake
def _(dH, dhT, x_proj, H_all, h0, valid, kind):  # type: ignore[no-untyped-def]
    return x_proj.new_empty(x_proj.shape), h0.new_empty(h0.shape)


def _scan_setup(ctx: Any, inputs: Tensors, output: Tensors) -> None:
    x_proj, h0, valid, kind = inputs
    ctx.save_for_backward(x_proj, output[0], h0, valid)
    ctx.kind = kind


def _scan_backward(ctx: Any, dH: Tensor | None, dhT: Tensor | None) -> tuple[Any, ...]:
    x_proj, H_all, h0, valid = ctx.saved_tensors
    dH = torch.zeros_like(H_all) if dH is None else dH
    dhT = torch.zeros_like(h0) if dhT is None else dhT
    dx, dh0 = torch.ops.rnnlab.gated_scan_backward(dH, dhT, x_proj, H_all, h0, valid, ctx.kind)
    return dx, dh0, None, None


gated_scan_forward.register_autograd(_scan_backward, setup_context=_scan_setup)


# --- the GRU-like cells of issue 18 (csrc/gru_like.cpp) ------------------------------------------
@torch.library.custom_op("rnnlab::egru_forward", mutates_args=())
def egru_forward(
    x_proj: Tensor, weight_hh: Tensor, bias_hh: Tensor, theta: Tensor, y0: Tensor, c0: Tensor,
    valid: Tensor, rmask: Tensor, dampening: float, support: float, save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(Y, y_T, c_T, acts) of EGRU; theta comes clamped to [0, 1]. ``dampening`` and ``support``
    shape the backward's pseudo-derivative only."""
    out = _ext().egru_forward(x_proj, weight_hh, bias_hh, theta, y0, c0, valid, rmask, save)
    return _own(out, x_proj, weight_hh, bias_hh, theta, y0, c0, valid, rmask)


@egru_forward.register_fake
def _(x_proj, weight_hh, bias_hh, theta, y0, c0, valid, rmask, dampening, support, save):  # type: ignore[no-untyped-def]
    T, B, _ = x_proj.shape
    H = weight_hh.shape[1]
    return (
        x_proj.new_empty(T, B, H),
        y0.new_empty(y0.shape),
        c0.new_empty(c0.shape),
        x_proj.new_empty(T, B, 6 * H) if save else _none(x_proj),
    )


@torch.library.custom_op("rnnlab::egru_backward", mutates_args=())
def egru_backward(
    dY: Tensor, dyT: Tensor, dcT: Tensor, acts: Tensor, Y: Tensor, y0: Tensor, weight_hh: Tensor,
    theta: Tensor, valid: Tensor, rmask: Tensor, dampening: float, support: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(d x_proj, d R, d bias_hh, d y0, d c0, d theta)."""
    out = _ext().egru_backward(
        dY, dyT, dcT, acts, Y, y0, weight_hh, theta, valid, rmask, dampening, support
    )
    return _own(out, dY, dyT, dcT, acts, Y, y0, weight_hh, theta, valid, rmask)


@egru_backward.register_fake
def _(dY, dyT, dcT, acts, Y, y0, weight_hh, theta, valid, rmask, dampening, support):  # type: ignore[no-untyped-def]
    T, B, H = dY.shape
    return (
        dY.new_empty(T, B, 3 * H),
        weight_hh.new_empty(weight_hh.shape),
        dY.new_empty(3 * H),
        y0.new_empty(y0.shape),
        dcT.new_empty(dcT.shape),
        theta.new_empty(theta.shape),
    )


def _egru_setup(ctx: Any, inputs: Tensors, output: Tensors) -> None:
    # Absent output gradients stay None: no zero-filled (T, B, .) tensor for the saved outputs.
    ctx.set_materialize_grads(False)
    x_proj, weight_hh, bias_hh, theta, y0, c0, valid, rmask, dampening, support, save = inputs
    Y, _, _, acts = output
    ctx.save_for_backward(acts, Y, y0, c0, weight_hh, theta, valid, rmask)
    ctx.dampening, ctx.support, ctx.save = dampening, support, save


def _egru_backward(ctx: Any, dY: Tensor | None, dyT: Tensor | None, dcT: Tensor | None,
                   *_unused: Any) -> tuple[Any, ...]:  # fmt: skip
    if not ctx.save:
        raise RuntimeError("rnnlab::egru_forward ran with save=False: no backward is possible")
    acts, Y, y0, c0, weight_hh, theta, valid, rmask = ctx.saved_tensors
    dY = torch.zeros_like(Y) if dY is None else dY
    dyT = torch.zeros_like(y0) if dyT is None else dyT
    dcT = torch.zeros_like(c0) if dcT is None else dcT
    dX, dR, d_bias, dy0, dc0, d_theta = torch.ops.rnnlab.egru_backward(
        dY, dyT, dcT, acts, Y, y0, weight_hh, theta, valid, rmask, ctx.dampening, ctx.support
    )
    return dX, dR, d_bias, d_theta, dy0, dc0, None, None, None, None, None


egru_forward.register_autograd(_egru_backward, setup_context=_egru_setup)


@torch.library.custom_op("rnnlab::gatel0rd_forward", mutates_args=())
def gatel0rd_forward(
    x_gr: Tensor, weight_hh: Tensor, h0: Tensor, L0: Tensor, noise: Tensor, valid: Tensor,
    save: bool,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """(Hs, Ls, acts): GateL0RD's latent and gate after every step (carried over padding) from
    the gate and recommendation rows x_gr (T, B, 2H); noise (T, B, H) is sigma eps_t or empty."""
    out = _ext().gatel0rd_forward(x_gr, weight_hh, h0, L0, noise, valid, save)
    return _own(out, x_gr, weight_hh, h0, L0, noise, valid)


@gatel0rd_forward.register_fake
def _(x_gr, weight_hh, h0, L0, noise, valid, save):  # type: ignore[no-untyped-def]
    T, B, _ = x_gr.shape
    H = weight_hh.shape[1]
    new = x_gr.new_empty
    return new(T, B, H), new(T, B, H), new(T, B, H) if save else _none(x_gr)


@torch.library.custom_op("rnnlab::gatel0rd_backward", mutates_args=())
def gatel0rd_backward(
    dHs: Tensor, dLs: Tensor, acts: Tensor, Hs: Tensor, Ls: Tensor, h0: Tensor,
    weight_hh: Tensor, valid: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(d x_gr, d R, d h0, d L0)."""
    out = _ext().gatel0rd_backward(dHs, dLs, acts, Hs, Ls, h0, weight_hh, valid)
    return _own(out, dHs, dLs, acts, Hs, Ls, h0, weight_hh, valid)


@gatel0rd_backward.register_fake
def _(dHs, dLs, acts, Hs, Ls, h0, weight_hh, valid):  # type: ignore[no-untyped-def]
    T, B, H = dHs.shape
    return (
        dHs.new_empty(T, B, 2 * H),
        weight_hh.new_empty(weight_hh.shape),
        h0.new_empty(h0.shape),
        h0.new_empty(h0.shape),
    )


def _gatel0rd_setup(ctx: Any, inputs: Tensors, output: Tensors) -> None:
    # Absent output gradients stay None: no zero-filled (T, B, .) tensor for the saved outputs.
    ctx.set_materialize_grads(False)
    x_gr, weight_hh, h0, L0, noise, valid, save = inputs
    Hs, Ls, acts = output
    ctx.save_for_backward(acts, Hs, Ls, h0, weight_hh, valid)
    ctx.save = save


def _gatel0rd_backward(ctx: Any, dHs: Tensor | None, dLs: Tensor | None,
                       *_unused: Any) -> tuple[Any, ...]:  # fmt: skip
    if not ctx.save:
        raise RuntimeError("rnnlab::gatel0rd_forward ran with save=False: no backward is possible")
    acts, Hs, Ls, h0, weight_hh, valid = ctx.saved_tensors
    dHs = torch.zeros_like(Hs) if dHs is None else dHs
    dLs = torch.zeros_like(Ls) if dLs is None else dLs
    dX, dR, dh0, dL0 = torch.ops.rnnlab.gatel0rd_backward(
        dHs, dLs, acts, Hs, Ls, h0, weight_hh, valid
    )
    return dX, dR, dh0, dL0, None, None, None


gatel0rd_forward.register_autograd(_gatel0rd_backward, setup_context=_gatel0rd_setup)


@torch.library.custom_op("rnnlab::ncgru_forward", mutates_args=())
def ncgru_forward(
    x_proj: Tensor, weight: Tensor, modrelu_bias: Tensor, h0: Tensor, valid: Tensor,
    rmask: Tensor, save: bool,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """(Y, h_T, acts) of NC-GRU; weight (3H, H) is [R_r; R_u; W_c]."""
    out = _ext().ncgru_forward(x_proj, weight, modrelu_bias, h0, valid, rmask, save)
    return _own(out, x_proj, weight, modrelu_bias, h0, valid, rmask)


@ncgru_forward.register_fake
def _(x_proj, weight, modrelu_bias, h0, valid, rmask, save):  # type: ignore[no-untyped-def]
    T, B, _ = x_proj.shape
    H = weight.shape[1]
    return (
        x_proj.new_empty(T, B, H),
        h0.new_empty(h0.shape),
        x_proj.new_empty(T, B, 5 * H) if save else _none(x_proj),
    )


@torch.library.custom_op("rnnlab::ncgru_backward", mutates_args=())
def ncgru_backward(
    dY: Tensor, dhT: Tensor, acts: Tensor, Y: Tensor, h0: Tensor, weight: Tensor,
    modrelu_bias: Tensor, valid: Tensor, rmask: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(d x_proj, d weight, d modrelu_bias, d h0)."""
    out = _ext().ncgru_backward(dY, dhT, acts, Y, h0, weight, modrelu_bias, valid, rmask)
    return _own(out, dY, dhT, acts, Y, h0, weight, modrelu_bias, valid, rmask)


@ncgru_backward.register_fake
def _(dY, dhT, acts, Y, h0, weight, modrelu_bias, valid, rmask):  # type: ignore[no-untyped-def]
    T, B, H = dY.shape
    return (
        dY.new_empty(T, B, 3 * H),
        weight.new_empty(weight.shape),
        modrelu_bias.new_empty(modrelu_bias.shape),
        h0.new_empty(h0.shape),
    )


def _ncgru_setup(ctx: Any, inputs: Tensors, output: Tensors) -> None:
    # Absent output gradients stay None: no zero-filled (T, B, .) tensor for the saved outputs.
    ctx.set_materialize_grads(False)
    x_proj, weight, modrelu_bias, h0, valid, rmask, save = inputs
    Y, _, acts = output
    ctx.save_for_backward(acts, Y, h0, weight, modrelu_bias, valid, rmask)
    ctx.save = save


def _ncgru_backward(ctx: Any, dY: Tensor | None, dhT: Tensor | None,
                    *_unused: Any) -> tuple[Any, ...]:  # fmt: skip
    if not ctx.save:
        raise RuntimeError("rnnlab::ncgru_forward ran with save=False: no backward is possible")
    acts, Y, h0, weight, modrelu_bias, valid, rmask = ctx.saved_tensors
    dY = torch.zeros_like(Y) if dY is None else dY
    dhT = torch.zeros_like(h0) if dhT is None else dhT
    dX, dW, db, dh0 = torch.ops.rnnlab.ncgru_backward(
        dY, dhT, acts, Y, h0, weight, modrelu_bias, valid, rmask
    )
    return dX, dW, db, dh0, None, None, None


ncgru_forward.register_autograd(_ncgru_backward, setup_context=_ncgru_setup)
