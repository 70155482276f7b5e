"""ONNX export of a ``Recurrent``: a graph that computes the same function for any sequence
length, batch size and lengths, or one clear error; never a silently wrong graph.

While ``torch.onnx.export`` (the default, torch.export-based exporter) traces a ``Recurrent``,
each layer and direction becomes

- ONNX's own ``LSTM``, ``GRU`` or ``RNN`` operator where it computes the cell's function: ``lstm``
  and ``lstm-np`` (no peepholes), ``lstm-v`` (peepholes, ONNX's ``P`` in its i, o, f order),
  ``gru`` (torch's form: ONNX's ``linear_before_reset=1``), ``gru-v1`` (Chung et al.'s reset
  before the product: ``linear_before_reset=0``, no recurrent bias) and ``tanh``, without layer
  norm or zoneout. The weights are reordered to ONNX's gate order (i, o, f, c for the LSTM; z, r,
  h for the GRU) and the biases split into its input and recurrent halves;
- elsewhere, an ONNX ``Scan`` whose body is the cell's own step (``cell.step``), its padding rule
  and, in evaluation, zoneout's expectation: a loop of primitive operators with a dynamic trip
  count.

Refused, each with one line: the TorchScript-based exporter (``dynamo=False``), which unrolls
the loop over the traced length (the graph it wrote before was wrong on other lengths), and
export in training mode of a layer that draws random masks (recurrent dropout, zoneout, dropout
between layers): call ``.eval()`` first. ``tests/test_onnx.py`` runs every cell's exported graph
in ONNX Runtime on new lengths and batch sizes against the eager module, and checks which ONNX
operator each cell became.

>>> onnx_exporting()
False
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from rnnlab.errors import ConfigError

if TYPE_CHECKING:
    from rnnlab.cells.base import Cell, State


@torch.compiler.assume_constant_result
def onnx_exporting() -> bool:
    """True while torch.onnx.export traces (either exporter). Read by Dynamo as a constant at
    trace time (the exporter's strict mode traces with Dynamo, which would otherwise fold the
    flag to its value outside export)."""
    return bool(torch.onnx.is_in_onnx_export())


def refuse_unsupported_export(training_randomness: bool) -> None:
    """The exports that cannot be right, refused before anything is traced further."""
    if torch.jit.is_tracing():
        raise ConfigError(
            "rnnlab: the TorchScript-based ONNX exporter (torch.onnx.export(..., dynamo=False)) "
            "unrolls a Recurrent's time loop over the traced length, which is wrong for other "
            "lengths; use torch.onnx.export(..., dynamo=True) (the default)"
        )
    if training_randomness:
        raise ConfigError(
            "rnnlab: a Recurrent in training mode draws random masks (dropout, recurrent "
            "dropout, zoneout) that an ONNX graph cannot reproduce; call .eval() before export"
        )


def export_layer(
    cell: Cell, x: Tensor, state: State, valid: Tensor | None, zone: Tensor | None
) -> tuple[Tensor, State]:
    """One layer and direction, time-major x (T, B, I), as ONNX computes it: the cell's ONNX
    operator where there is one (and no zoneout), else a Scan of its step."""
    if cell.onnx_refusal is not None:
        raise ConfigError(f"rnnlab: {type(cell).__name__} cannot be exported to ONNX: "
                          f"{cell.onnx_refusal}")  # fmt: skip
    if zone is None:
        mapped = cell.onnx_operator(x, state, valid)
        if mapped is not None:
            return mapped
    return scan_layer(cell, cell.project_input(x), state, valid, zone)


def scan_layer(
    cell: Cell, x_proj: Tensor, state: State, valid: Tensor | None, zone: Tensor | None
) -> tuple[Tensor, State]:
    """The step loop as a scan (torch's ``scan`` operator, an ONNX ``Scan`` once exported):
    padded steps keep the state and output zeros; ``zone`` (T, B, parts * H) is zoneout's keep
    probability p in evaluation, h = p h_prev + (1 - p) h_new on the parts it covers."""
    from torch._higher_order_ops.scan import scan

    xs: dict[str, Tensor] = {"x": x_proj}
    if valid is not None:
        xs["valid"] = valid
    if zone is not None:
        xs["zone"] = zone

    def step(carry: tuple[Tensor, ...], inputs: dict[str, Tensor]) -> tuple[State, Tensor]:
        new = cell.step(inputs["x"], carry, None)
        if "zone" in inputs:
            z = inputs["zone"]
            parts = z.chunk(z.shape[-1] // new[0].shape[-1], dim=-1)
            zoned = [torch.lerp(n, o, d) for n, o, d in zip(new, carry, parts, strict=False)]
            new = tuple(zoned) + tuple(new[len(parts) :])
        if "valid" in inputs:
            v = inputs["valid"]
            new = tuple(torch.where(v, n, s) for n, s in zip(new, carry, strict=True))
            return new, torch.where(v, new[0], 0.0)
        return tuple(n.clone() for n in new), new[0].clone()  # the scan allows no aliasing

    final, outputs = scan(step, tuple(state), xs)
    return outputs, tuple(final)
