"""torch's own recurrent layers (cuDNN on a GPU, oneDNN on the CPU) for the cells whose function
is theirs: ``lstm`` and ``lstm-np`` (torch's LSTM), ``gru`` (torch's GRU), ``tanh`` (torch's
Elman RNN), without layer norm, zoneout or recurrent dropout (which torch's layers lack).

One layer and direction per call, on rnnlab's parameters: the input weights and biases as
torch's ``weight_ih``/``b_ih``, ``weight_hh`` as torch's, and torch's ``b_hh`` the GRU's
``bias_hh`` or zeros (rnnlab's LSTM and tanh keep one bias, torch's sum of the two). Gate orders
agree (i, f, g, o; r, z, n). ``lengths`` go through a packed sequence, as ``nn.LSTM`` takes
them: padded steps output zeros and keep the state. A sequence of length 0 (a streaming chunk
past its end) cannot be packed, so such a batch is left to rnnlab's own kernels.

Where this runs (``Recurrent``'s ``backend="auto"``): on CUDA for all three (cuDNN, the fused
kernels being CPU code); on the CPU for the LSTM only, where oneDNN's LSTM is at the machine's
matrix-product peak and faster than rnnlab's kernel, while rnnlab's GRU and tanh kernels are faster
than torch's (docs/results.md). ``backend="torch"`` asks for it wherever it applies.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

State = tuple[Tensor, ...]

_FUNCTIONS: dict[str, Any] = {
    "lstm": torch._VF.lstm,
    "gru": torch._VF.gru,
    "tanh": torch._VF.rnn_tanh,
}


def torch_layer(
    kind: str,
    x: Tensor,
    weights: tuple[Tensor, Tensor, Tensor, Tensor],
    state: State,
    valid: Tensor | None,
    training: bool,
) -> tuple[Tensor, State] | None:
    """x (T, B, I) through torch's ``kind`` layer (``lstm``, ``gru``, ``tanh``) with weights
    (W_ih, W_hh, b_ih, b_hh) and state parts (B, H); valid (T, B, 1) or None. Returns the outputs
    (T, B, H) and the final state, or None where a sequence has length 0 or while
    torch.compile or torch.export traces."""
    if torch.compiler.is_compiling():
        # Traced, torch's LSTM is unrolled over the traced length (and packing needs the
        # lengths' values): the fused operators keep T dynamic.
        return None
    function = _FUNCTIONS[kind]
    hx: Tensor | tuple[Tensor, ...] = tuple(s.unsqueeze(0).contiguous() for s in state)
    if kind != "lstm":
        hx = hx[0]
    flat = list(weights)
    if valid is None:
        out = function(x, hx, flat, True, 1, 0.0, training, False, False)
        return out[0], tuple(h[0] for h in out[1:])
    lengths = valid[..., 0].sum(0).cpu()
    if bool((lengths == 0).any()):
        return None
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    order, back = packed.sorted_indices, packed.unsorted_indices
    assert order is not None and back is not None
    if isinstance(hx, tuple):
        hx = tuple(h.index_select(1, order) for h in hx)
    else:
        hx = hx.index_select(1, order)
    out = function(packed.data, packed.batch_sizes, hx, flat, True, 1, 0.0, training, False)
    result = nn.utils.rnn.PackedSequence(out[0], packed.batch_sizes, order, back)
    padded, _ = nn.utils.rnn.pad_packed_sequence(result, total_length=x.shape[0])
    return padded, tuple(h[0].index_select(0, back) for h in out[1:])


def prefers_torch(kind: str, device: torch.device, packed: bool = False) -> bool:
    """Whether ``backend="auto"`` runs torch's layer: always on CUDA (cuDNN); on the CPU for the
    LSTM over a batch of equal lengths (oneDNN is faster there than rnnlab's kernel; rnnlab's GRU
    and tanh kernels are faster than torch's). A batch of unequal lengths (``packed``) goes
    through a packed sequence, which made oneDNN's LSTM 3.7-3.9 times slower than rnnlab's
    kernel on this project's 2-core machine (B=16, T=150, I=82, H=128, forward+backward,
    one and two directions; ``python bench/packed_lstm.py``), so the kernel runs it."""
    return device.type == "cuda" or (kind == "lstm" and not packed)
