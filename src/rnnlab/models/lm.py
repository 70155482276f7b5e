"""A recurrent language model (Zaremba et al. 2014; Gal & Ghahramani 2016; Merity et al. 2017):

    e_t = E[w_t]                     (V, E) embedding, uniform in [-init, init]
    h_t = Recurrent(e_t, h_{t-1})    any cell of the zoo, ``num_layers`` layers
    p(w_{t+1} | w_<=t) = softmax(W_o h_t + b_o), W_o = E when tied (then E = H)

Regularisers, each off by default: ``dropout`` on the non-recurrent connections (input, between
layers, output), ``variational`` to draw that mask once per sequence and reuse it at every step
(Gal & Ghahramani), ``embedding_dropout`` (whole words dropped from the embedding matrix),
``weight_drop`` (DropConnect on the recurrent weights R of every layer, Merity et al.) and the
cell's own ``recurrent_dropout`` and ``zoneout``.

>>> lm = LanguageModel(ModelConfig(model="lm", hidden_size=16, tied=True), vocab_size=50)
>>> logits, state = lm(torch.zeros(7, 3, dtype=torch.long))
>>> tuple(logits.shape)
(7, 3, 50)
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from rnnlab.errors import ConfigError
from rnnlab.models.rnn import ModelConfig, make_recurrent


class _DropConnect(nn.Module):
    """A parametrisation: the weight with each entry dropped (and the rest scaled) in training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, weight: Tensor) -> Tensor:
        return F.dropout(weight, self.p, self.training)


def locked_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout with one mask per sequence, reused at every step: x (T, B, D)."""
    if not training or p == 0:
        return x
    mask = torch.bernoulli(x.new_full((1, x.shape[1], x.shape[2]), 1 - p)) / (1 - p)
    return x * mask


class LanguageModel(nn.Module):
    """The architecture options are ``ModelConfig``'s (``model="lm"``); ``init`` > 0 draws every
    weight uniformly in [-init, init] (Zaremba et al.: 0.1, 0.05, 0.04 for small, medium, large),
    but the gains and shifts of a normalisation (layer norm's start at 1, batch norm's at 0.1)."""

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        if config.tied and config.embedding_size not in (0, config.hidden_size):
            raise ConfigError("tied embeddings need embedding_size == hidden_size")
        self.config = config
        E = config.embedding_size or config.hidden_size
        self.embedding = nn.Embedding(vocab_size, E)
        # Locked (variational) dropout acts between layers in forward: none inside the stack then.
        self.rnn = make_recurrent(
            replace(config, dropout=0.0 if config.variational else config.dropout), E, False
        )
        self.decoder = nn.Linear(config.hidden_size, vocab_size)
        if config.init:  # Zaremba et al.'s weights; a normalisation keeps its gains and shifts
            for name, p in self.named_parameters():
                if ".ln_" not in name and ".step_norms." not in name:
                    nn.init.uniform_(p, -config.init, config.init)
        if config.tied:
            self.decoder.weight = self.embedding.weight
        if config.weight_drop:
            for cell in self.rnn.layer_cells:
                drop = _DropConnect(config.weight_drop)
                parametrize.register_parametrization(cell, "weight_hh", drop)

    def forward(
        self, tokens: Tensor, state: tuple[Tensor, ...] | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """tokens (T, B) -> logits (T, B, V) and the final state (carry it to the next window).
        With weight drop, one mask of R per call: the parametrised weight is cached for it."""
        if self.config.weight_drop:
            with parametrize.cached():
                return self._forward(tokens, state)
        return self._forward(tokens, state)

    def _forward(
        self, tokens: Tensor, state: tuple[Tensor, ...] | None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        cfg = self.config
        weight = self.embedding.weight
        if self.training and cfg.embedding_dropout:
            keep = torch.bernoulli(weight.new_full((weight.shape[0], 1), 1 - cfg.embedding_dropout))
            weight = weight * keep / (1 - cfg.embedding_dropout)
        x = F.embedding(tokens, weight)  # (T, B, E)
        if cfg.variational:
            x = locked_dropout(x, cfg.dropout, self.training)
            out, state = self._layers_with_locked_dropout(x, state)
            out = locked_dropout(out, cfg.dropout, self.training)
        else:
            x = F.dropout(x, cfg.dropout, self.training)
            out, state = self.rnn(x, state=state)
            out = F.dropout(out, cfg.dropout, self.training)
        return self.decoder(out), state

    def _layers_with_locked_dropout(
        self, x: Tensor, state: tuple[Tensor, ...] | None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The stack one layer at a time, a locked mask between layers (Gal & Ghahramani)."""
        layers = self.config.num_layers
        if layers == 1:
            return self.rnn(x, state=state)
        finals = []
        for k in range(layers):
            layer_state = None if state is None else tuple(s[k : k + 1] for s in state)
            x, final = self.rnn.run_layer(k, x, layer_state)
            finals.append(final)
            if k < layers - 1:
                x = locked_dropout(x, self.config.dropout, self.training)
        return x, tuple(torch.cat(parts) for parts in zip(*finals, strict=True))
