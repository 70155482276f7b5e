"""Convolutional language models: the TCN of Bai, Kolter & Koltun 2018 and the gated
convolutional network (GCNN) of Dauphin, Fan, Auli & Grangier 2017, on the recurrent language
model's interface (tokens (T, B) in, logits (T, B, V) out).

Both share one plan::

    e_t = Dropout_in(E[w_t])                       (V, E) embedding, uniform in [-0.1, 0.1]
    h   = blocks(e)                                causal: h_t sees e_t, e_{t-1}, ... only
    p(w_{t+1} | w_<=t) = softmax(W_o h_t + b_o)    W_o = E when tied, b_o = 0 at first

with block widths E -> H -> ... -> H -> E (``num_layers`` blocks; the last returns to the
embedding width so that the decoder can be tied, as Bai et al.'s ``num_chans = [nhid] *
(levels - 1) + [emsize]`` in locuslab/TCN ``TCN/char_cnn/char_cnn_test.py``).

**TCN** (``kind="tcn"``): the blocks are ``rnnlab.models.tcn.TemporalBlock`` (two
weight-normalised causal convolutions of dilation 2^i, ReLU, dropout, a residual), so the
receptive field is R = 1 + 2 (k - 1) (2^levels - 1) tokens.

**GCNN** (``kind="gcnn"``): every convolution is a gated linear unit (Dauphin et al., Eq. 1)::

    h_l(X) = (X * W + b) ⊗ σ(X * V + c)            W, V: (k, C_in, C_out), * causal convolution

wrapped in a residual block that adds the block's input to its output (Sec. 2; a 1x1
convolution where the widths differ): a plain block is two GLUs of kernel k (R = 1 + 2 (k - 1)
levels), a bottleneck block (Sec. 2, "bottleneck structure") a 1x1 GLU down to C/4, a GLU of
kernel k, and a 1x1 GLU back up (R = 1 + (k - 1) levels). Weights are weight-normalised
(Salimans & Kingma 2016; Dauphin et al. Sec. 4.2), He-initialised; dropout follows every GLU.
Their zero padding of the sequence's start by k - 1 steps is the causal convolution's left
padding here. No dilation (the paper has none).

``forward(tokens, state)`` takes and returns a ``state`` like the recurrent model's: the last
R - 1 tokens seen, so that feeding a stream a token at a time (generation) sees the same inputs
as one pass over it; a window without a state starts from the zero padding.

>>> lm = ConvLanguageModel(ConvLMConfig(kind="gcnn", hidden_size=8, embedding_size=6), 20)
>>> logits, state = lm(torch.zeros(7, 3, dtype=torch.long))
>>> tuple(logits.shape), lm.receptive_field, tuple(state[0].shape)
((7, 3, 20), 13, (7, 3))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.errors import ConfigError
from rnnlab.models.tcn import CausalConv1d, TemporalBlock
from rnnlab.models.tcn import receptive_field as tcn_receptive_field

KINDS = ("tcn", "gcnn")
INIT_RANGE = 0.1  # Bai et al.'s embedding and decoder: uniform in [-0.1, 0.1], decoder bias 0


@dataclass(frozen=True)
class ConvLMConfig:
    """The architecture: ``kind`` (tcn or gcnn), ``num_layers`` blocks of ``hidden_size``
    channels (the last of ``embedding_size``), ``kernel_size``, ``dropout`` after every
    convolution, ``input_dropout`` on the embedded inputs (Bai et al.'s ``--emb_dropout``),
    ``tied`` decoder, and for the GCNN ``bottleneck`` blocks."""

    kind: str = "tcn"
    embedding_size: int = 100
    hidden_size: int = 450
    num_layers: int = 3
    kernel_size: int = 3
    dropout: float = 0.1
    input_dropout: float = 0.1
    tied: bool = True
    bottleneck: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.bottleneck and (self.kind != "gcnn" or self.hidden_size < 4):
            raise ConfigError("bottleneck blocks are the GCNN's, of at least 4 channels")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gcnn_receptive_field(levels: int, kernel_size: int, bottleneck: bool = False) -> int:
    """Tokens a GCNN output sees (its own included): each convolution of kernel k reaches k - 1
    steps back, a plain block has two, a bottleneck block one (its 1x1s reach nothing).

    >>> gcnn_receptive_field(4, 4), gcnn_receptive_field(4, 4, bottleneck=True)
    (25, 13)
    """
    per_block = 1 if bottleneck else 2
    return 1 + per_block * (kernel_size - 1) * levels


class GLU(nn.Module):
    """A gated linear unit over a causal convolution (Dauphin et al. 2017, Eq. 1),
    (B, C_in, T) -> (B, C_out, T)::

        h = (X * W + b) ⊗ σ(X * V + c)

    W and V are one weight-normalised convolution of 2 C_out channels, the first C_out the
    linear path A = X * W + b, the rest the gate B = X * V + c."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = CausalConv1d(in_channels, 2 * out_channels, kernel_size, 1, std=None)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.conv(x).chunk(2, dim=1)  # (B, C_out, T) each
        return a * torch.sigmoid(b)


class GatedBlock(nn.Module):
    """A residual block of GLUs (Dauphin et al. Sec. 2): y = R x + f(x), with f two GLUs of
    kernel k (plain) or a 1x1 GLU to C_out / 4, a GLU of kernel k and a 1x1 GLU back
    (``bottleneck``); dropout after each GLU; R a 1x1 convolution where the widths differ."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dropout: float,
                 bottleneck: bool) -> None:  # fmt: skip
        super().__init__()
        if bottleneck:
            inner = out_channels // 4
            plan = [(in_channels, inner, 1), (inner, inner, kernel_size), (inner, out_channels, 1)]
        else:
            plan = [(in_channels, out_channels, kernel_size),
                    (out_channels, out_channels, kernel_size)]  # fmt: skip
        self.glus = nn.ModuleList(GLU(i, o, k) for i, o, k in plan)
        self.dropout = dropout
        self.downsample: nn.Conv1d | None = None
        if in_channels != out_channels:
            self.downsample = nn.Conv1d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, T) -> (B, C_out, T)
        z = x
        for glu in self.glus:
            z = F.dropout(glu(z), self.dropout, self.training)
        residual = x if self.downsample is None else self.downsample(x)
        return z + residual


class ConvLanguageModel(nn.Module):
    """The TCN or GCNN language model of the module docstring, for ``vocab_size`` tokens."""

    def __init__(self, config: ConvLMConfig, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        E, H, L, k = (config.embedding_size, config.hidden_size, config.num_layers,
                      config.kernel_size)  # fmt: skip
        widths = [E] + [H] * (L - 1) + [E]
        self.embedding = nn.Embedding(vocab_size, E)
        blocks: list[nn.Module] = []
        for i in range(L):
            if config.kind == "tcn":
                blocks.append(TemporalBlock(widths[i], widths[i + 1], k, 2**i, config.dropout))
            else:
                blocks.append(GatedBlock(widths[i], widths[i + 1], k, config.dropout,
                                         config.bottleneck))  # fmt: skip
        self.blocks = nn.ModuleList(blocks)
        self.decoder = nn.Linear(E, vocab_size)
        nn.init.uniform_(self.embedding.weight, -INIT_RANGE, INIT_RANGE)
        nn.init.uniform_(self.decoder.weight, -INIT_RANGE, INIT_RANGE)
        nn.init.zeros_(self.decoder.bias)
        if config.tied:
            self.decoder.weight = self.embedding.weight

    @property
    def receptive_field(self) -> int:
        c = self.config
        if c.kind == "tcn":
            return tcn_receptive_field(c.num_layers, c.kernel_size)
        return gcnn_receptive_field(c.num_layers, c.kernel_size, c.bottleneck)

    def forward(
        self, tokens: Tensor, state: tuple[Tensor, ...] | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """tokens (T, B) -> logits (T, B, V) and the state: the last R - 1 tokens of the
        tokens in ``state`` (the previous ones, (S, B)) followed by ``tokens``."""
        T = tokens.shape[0]
        if state is not None:
            tokens = torch.cat([state[0], tokens])  # (S + T, B)
        x = F.embedding(tokens, self.embedding.weight)  # (S + T, B, E)
        x = F.dropout(x, self.config.input_dropout, self.training)
        h = x.permute(1, 2, 0)  # (B, E, S + T): channels first, as Conv1d takes them
        for block in self.blocks:
            h = block(h)
        logits = self.decoder(h.permute(2, 0, 1)[-T:])  # (T, B, V)
        return logits, (tokens[-(self.receptive_field - 1) :],)
