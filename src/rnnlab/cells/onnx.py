"""ONNX's own recurrent operators (``LSTM``, ``GRU``, ``RNN``) as a cell emits them while
``torch.onnx.export`` traces (``Cell.onnx_operator``; the rest of ONNX export is
``rnnlab.export``). Each emits one node through ``torch.onnx.ops.symbolic_multi_out``: in the
traced program a placeholder with the outputs' shapes, in the ONNX graph the operator itself.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.cells.base import State

OPSET = 18  # the ONNX opset whose LSTM / GRU / RNN definitions the mapping follows


def sequence_lengths(valid: Tensor | None) -> Tensor | None:
    """(T, B, 1) bool -> (B,) int32, ONNX's ``sequence_lens``."""
    return None if valid is None else valid[..., 0].sum(0).to(torch.int32)


def onnx_rnn(
    op_type: str,
    x: Tensor,
    weights: tuple[Tensor, Tensor, Tensor],
    state: State,
    valid: Tensor | None,
    attrs: dict[str, int | str | list[str]],
    peephole: Tensor | None = None,
) -> tuple[Tensor, State]:
    """ONNX's ``LSTM``, ``GRU`` or ``RNN`` over x (T, B, I), one forward direction: weights
    (W, R, B) already in ONNX's gate order, B = [W_b, R_b]; state (h0[, c0]) each (B, H).
    Returns Y (T, B, H) and the final state."""
    T, B = x.shape[0], x.shape[1]
    H = state[0].shape[-1]
    W, R, bias = (w.unsqueeze(0) for w in weights)
    inputs: list[Tensor | None] = [x, W, R, bias, sequence_lengths(valid), state[0].unsqueeze(0)]
    shapes: list[list[int | torch.SymInt]] = [[T, 1, B, H], [1, B, H]]
    if op_type == "LSTM":
        inputs += [state[1].unsqueeze(0), None if peephole is None else peephole.unsqueeze(0)]
        shapes.append([1, B, H])
    outs = torch.onnx.ops.symbolic_multi_out(
        op_type,
        inputs,
        {"hidden_size": int(H), "direction": "forward", **attrs},
        dtypes=[x.dtype] * len(shapes),
        shapes=shapes,
        version=OPSET,
    )
    return outs[0][:, 0], tuple(o[0] for o in outs[1:])
