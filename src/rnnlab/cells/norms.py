"""Normalisations whose statistics span a step's batch or past steps, and quantised training.

Layer norm (``CellOptions.layer_norm``, Ba et al. 2016) normalises one row with its own
statistics and lives in the cells and their fused kernels. The three kinds here need more than
the row, so they run on the step loop, at the same places (the sites) as layer norm: the input
product W x, the recurrent product R y (each normalised separately, and gru-v1's two recurrent
products separately) and, for the LSTM family, the cell c_t before the output activation. A
site's normalised value is ``gain * xhat`` (plus ``shift`` at the c site); the cell's own bias is
added after the sum of the normalised products, as with layer norm.

- ``batch``, recurrent batch normalisation (Cooijmans et al. 2017, "Recurrent Batch
  Normalization", ICLR, eq. 6-8): BN(h; gamma, beta) = beta + gamma * (h - E[h]) / sqrt(Var[h] +
  eps), with the mean and (biased) variance of each unit over the valid rows of the batch at that
  step, *separate statistics per time step* t < ``norm_steps`` (population statistics kept per
  step as running averages, momentum 0.1, and used in evaluation; a step never seen in training,
  t past the last one seen, uses the last one seen, as the paper does for t > T_max). Gains start
  at 0.1 (their sec. 4: gamma = 0.1 keeps tanh and sigmoid out of saturation), the c site's shift
  at 0.
- ``batch-layer``, batch-layer normalisation (Ziaee & Cano 2022, "Batch Layer Normalization, A new
  normalization layer for CNNs and RNN", as their code computes it): with x_b the batch-normalised
  value (per time step as above) and x_f the layer-normalised one (the row's own statistics), both
  with eps = 1e-3, BLN(x) = gamma * ((1/n - 1e-4) x_f + (1 - 1/n - 1e-4) x_b) / sqrt(d) + beta,
  n the training batch's rows (in evaluation, the last training batch's, kept as a buffer) and d the
  site's width. Gains start at 1.
- ``assorted-time`` (Pospisil, Zadorozhnyy & Ye 2024, "Breaking Time Invariance: Assorted-Time
  Normalization for RNNs", Neural Processing Letters 56:78, as their ``ATN`` module computes it):
  the mean and (biased) variance are taken over the features *and* the site's values at the last
  k = ``norm_window`` steps of the same sequence (fewer at its start), and normalise the current
  value; k = 1 is layer norm. Gradients flow into the earlier steps' values, as in theirs. Gains
  start at 1.

What a step needs beyond the cell's own state travels in extra state parts after the cell's own
(so that padding, chunked streaming and bidirectional layers treat it like any state): a clock
(the number of valid steps the sequence has taken; width H, every entry the count) for the
per-step statistics, and for ``assorted-time`` the last k - 1 values of every site.

Quantised training (Hubara et al. 2018, "Quantized Neural Networks: Training Neural Networks with
Low Precision Weights and Activations", JMLR 18(187)): with b bits, the forward pass uses weights
on a symmetric grid of 2^b - 1 levels, w_q = s * round(w L / s) / L with L = 2^(b-1) - 1 and s =
max |w| of the matrix (per tensor, not differentiated), and outputs y_t rounded on the grid of
[-1, 1] after clipping to it; gradients pass straight through (Bengio et al. 2013's estimator, the
QNN's choice): the identity for the weights, the identity cancelled where |y| > 1 for the outputs.
``Recurrent`` applies both (weights as a parametrisation of every ``weight_*`` matrix of its
cells, outputs in its step loop).
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn

State = tuple[Tensor, ...]

STEP_NORMS = ("batch", "batch-layer", "assorted-time")
NORMS = ("none", "layer", *STEP_NORMS)
MOMENTUM = 0.1  # of the running (population) statistics, as torch.nn.BatchNorm
EPS = 1e-5
BLN_EPS = 1e-3  # Ziaee & Cano's offset
BLN_DELTA = 1e-4  # and their constant in the two weights


class StepNorms(nn.Module):
    """The normalisation of one cell at its sites (name -> width); ``shifted`` sites also learn a
    shift beta. Parameters ``gain_<site>`` (and ``shift_<site>``); for the batch kinds buffers
    ``mean_<site>``, ``var_<site>`` (steps, width) and ``seen`` (steps,): how many training batches
    updated each step's statistics; for ``batch-layer`` ``batch_rows``."""

    seen: Tensor
    batch_rows: Tensor

    def tensor(self, name: str) -> Tensor:
        """A parameter or buffer by name (``gain_ih``, ``mean_c``, ...), or an AttributeError."""
        return cast(Tensor, getattr(self, name))

    def __init__(
        self,
        kind: str,
        hidden_size: int,
        sites: dict[str, int],
        shifted: tuple[str, ...] = (),
        steps: int = 100,
        window: int = 5,
    ) -> None:
        super().__init__()
        if kind not in STEP_NORMS:
            raise ValueError(f"unknown step normalisation {kind!r}; choose from {STEP_NORMS}")
        self.kind = kind
        self.hidden_size = hidden_size
        self.sites = dict(sites)
        self.steps = steps
        self.window = window
        start = 0.1 if kind == "batch" else 1.0
        for name, width in self.sites.items():
            setattr(self, f"gain_{name}", nn.Parameter(torch.full((width,), start)))
            if name in shifted:
                setattr(self, f"shift_{name}", nn.Parameter(torch.zeros(width)))
            if kind != "assorted-time":
                self.register_buffer(f"mean_{name}", torch.zeros(steps, width))
                self.register_buffer(f"var_{name}", torch.ones(steps, width))
        if kind != "assorted-time":
            self.register_buffer("seen", torch.zeros(steps, dtype=torch.long))
        if kind == "batch-layer":
            self.register_buffer("batch_rows", torch.ones(()))
        self.total = sum(self.sites.values())

    @property
    def extra_widths(self) -> tuple[int, ...]:
        """The extra state parts, in multiples of H: the clock, and ATN's memory."""
        if self.kind != "assorted-time" or self.window == 1:
            return (1,)
        return (1, (self.window - 1) * self.total // self.hidden_size)

    def begin(self, extra: State, valid: Tensor | None) -> NormStep:
        """The normalisation of one step, from the extra state parts and the step's valid rows
        ((B, 1) bool, or None: all)."""
        return NormStep(self, extra, valid)


class NormStep:
    """One step's normalisation: call it on each site once, then ``end()`` for the new parts."""

    def __init__(self, norms: StepNorms, extra: State, valid: Tensor | None) -> None:
        self.norms = norms
        self.clock = extra[0]
        self.t = extra[0][:, 0].round().long()  # (B,) steps taken
        self.memory = extra[1] if len(extra) > 1 else None
        self.valid = valid
        self.values: dict[str, Tensor] = {}

    def __call__(self, site: str, x: Tensor) -> Tensor:
        n = self.norms
        self.values[site] = x
        if n.kind == "batch":
            xhat = self._batch(site, x, EPS)
        elif n.kind == "batch-layer":
            xhat = self._batch_layer(site, x)
        else:
            xhat = self._assorted(site, x)
        out = xhat * n.tensor(f"gain_{site}")
        shifted = hasattr(n, f"shift_{site}")
        return out + n.tensor(f"shift_{site}") if shifted else out

    def end(self) -> State:
        """The new clock and, for ATN, the memory with this step's values in front."""
        clock = self.clock + 1.0
        if self.memory is None:
            return (clock,)
        n = self.norms
        missing = set(n.sites) - set(self.values)
        if missing:
            raise RuntimeError(f"sites never normalised this step: {sorted(missing)}")
        now = torch.cat([self.values[name] for name in n.sites], dim=-1)
        keep = self.memory[:, : (n.window - 2) * n.total]
        return (clock, torch.cat([now, keep], dim=-1))

    # --- the statistics ---------------------------------------------------------------------
    def _batch(self, site: str, x: Tensor, eps: float) -> Tensor:
        """(x - mu_t) / sqrt(var_t + eps): the batch's statistics at this step in training,
        the population's of the sequence's own step in evaluation."""
        n = self.norms
        mean_buf, var_buf = n.tensor(f"mean_{site}"), n.tensor(f"var_{site}")
        if n.training:
            v = x.new_ones(x.shape[0], 1) if self.valid is None else self.valid.to(x.dtype)
            rows = v.sum().clamp_min(1.0)
            mean = (v * x).sum(0) / rows
            var = (v * (x - mean).square()).sum(0) / rows
            self._update(site, mean, var, rows)
            return (x - mean) * torch.rsqrt(var + eps)
        # The last step with statistics (0 if none yet), without leaving the graph.
        steps = torch.arange(n.steps, device=n.seen.device)
        last = torch.where(n.seen > 0, steps, 0).max()
        index = torch.minimum(self.t.clamp_min(0), last)
        return (x - mean_buf[index]) * torch.rsqrt(var_buf[index] + eps)

    def _update(self, site: str, mean: Tensor, var: Tensor, rows: Tensor) -> None:
        """The running statistics of this step (the latest step of the batch's valid rows)."""
        n = self.norms
        if torch.compiler.is_compiling():
            return  # a traced training step keeps no population statistics
        with torch.no_grad():
            live = self.t if self.valid is None else self.t[self.valid[:, 0]]
            if live.numel() == 0:
                return
            i = min(int(live.max()), n.steps - 1)
            unbiased = var * (rows / (rows - 1.0).clamp_min(1.0))
            mean_buf, var_buf = n.tensor(f"mean_{site}"), n.tensor(f"var_{site}")
            mean_buf[i].lerp_(mean.detach().to(mean_buf.dtype), MOMENTUM)
            var_buf[i].lerp_(unbiased.detach().to(var_buf.dtype), MOMENTUM)
            if site == next(iter(n.sites)):
                n.seen[i] += 1
                if n.kind == "batch-layer":
                    n.batch_rows.fill_(float(rows))

    def _batch_layer(self, site: str, x: Tensor) -> Tensor:
        n = self.norms
        x_b = self._batch(site, x, BLN_EPS)
        var_f, mean_f = torch.var_mean(x, dim=-1, unbiased=False, keepdim=True)
        x_f = (x - mean_f) * torch.rsqrt(var_f + BLN_EPS)
        if n.training:
            rows = x.new_tensor(float(x.shape[0])) if self.valid is None else (
                self.valid.sum().clamp_min(1).to(x.dtype))  # fmt: skip
        else:
            rows = n.batch_rows.to(x.dtype)
        w_f = rows.reciprocal() - BLN_DELTA
        return (w_f * x_f + (1.0 - w_f - 2 * BLN_DELTA) * x_b) / math.sqrt(x.shape[-1])

    def _assorted(self, site: str, x: Tensor) -> Tensor:
        """Mean and variance over the features and the last k values of this site."""
        n = self.norms
        mean = x.mean(-1, keepdim=True)
        square = x.square().mean(-1, keepdim=True)
        count = torch.ones_like(mean)
        if n.window > 1:
            assert self.memory is not None
            offset = sum(w for name, w in n.sites.items() if _before(n.sites, name, site))
            width = n.sites[site]
            past = self.memory.unflatten(-1, (n.window - 1, n.total))[..., offset : offset + width]
            # Entry j holds step t - 1 - j; only those the sequence has taken count.
            j = torch.arange(n.window - 1, device=x.device)
            w = (j[None, :] < self.t[:, None]).to(x.dtype).unsqueeze(-1)  # (B, k-1, 1)
            mean = mean + (w * past.mean(-1, keepdim=True)).sum(1)
            square = square + (w * past.square().mean(-1, keepdim=True)).sum(1)
            count = count + w.sum(1)
        mean = mean / count
        var = (square / count - mean.square()).clamp_min(0.0)
        return (x - mean) * torch.rsqrt(var + EPS)


def _before(sites: dict[str, int], name: str, site: str) -> bool:
    """Whether ``name`` comes before ``site`` in the sites' order."""
    order = list(sites)
    return order.index(name) < order.index(site)


# --- quantised training ---------------------------------------------------------------------
class QuantisedWeight(nn.Module):
    """A parametrisation (torch.nn.utils.parametrize): the weight on a symmetric grid of
    2^b - 1 levels scaled by its largest magnitude, with the straight-through gradient."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, w: Tensor) -> Tensor:
        levels = 2 ** (self.bits - 1) - 1
        scale = w.detach().abs().max().clamp_min(torch.finfo(w.dtype).tiny)
        q = torch.round(w / scale * levels) * (scale / levels)
        return w + (q - w).detach()


def quantise_output(y: Tensor, bits: int) -> Tensor:
    """y clipped to [-1, 1] and rounded to 2^b - 1 levels; the gradient passes where |y| <= 1."""
    levels = 2 ** (bits - 1) - 1
    clipped = y.clamp(-1.0, 1.0)
    return clipped + (torch.round(clipped * levels) / levels - clipped).detach()
