"""What each registered cell takes, read from the cells themselves (never a list kept by hand)."""

from rnnlab.cells import cell_names, probe_cell


def probe(cell: str):
    return probe_cell(cell)


def takes(cell: str, option: str) -> bool:
    """Whether ``Recurrent`` accepts the layer option (layer_norm, zoneout, recurrent_dropout,
    norm, quant_bits)."""
    return probe(cell).refusal(option) is None


def usable(cell: str, **options):
    """The options of a layer, without the cell options this cell does not take."""
    layer_options = ("layer_norm", "zoneout", "recurrent_dropout", "norm", "quant_bits")
    return {k: v for k, v in options.items() if k not in layer_options or takes(cell, k)}


FUSED = [c for c in cell_names() if probe(c).fused_kernel]
EXACT = [c for c in cell_names() if probe(c).exact_gradient]
SURROGATE = [c for c in cell_names() if not probe(c).exact_gradient]
