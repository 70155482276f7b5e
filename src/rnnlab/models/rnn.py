"""A deterministic next-frame predictor: Recurrent stack + output distribution.

log p(x_1..x_T) = sum_t log p(x_t | h_{t-1}), where h_{t-1} summarises x_<t. The input at step t is
x_{t-1}, and x_0 is a frame of zeros, so the first frame is predicted from the initial state and
counts like every other (Boulanger-Lewandowski et al. 2012).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.cells import CELLS
from rnnlab.errors import ConfigError, unknown_name
from rnnlab.heads import BernoulliHead, GaussianHead, MixtureGaussianHead, NADEHead
from rnnlab.recurrent import BACKENDS, Recurrent, parse_cell_args

MODELS = ("rnn", "rnn-nade", "vrnn", "lm", "sentence-vae", "sentence-lm", "ctc")
OUTPUTS = ("bernoulli", "nade", "gaussian", "gmm")


@dataclass(frozen=True)
class ModelConfig:
    """The predictor's architecture (resolved into every run's config.json).

    ``model``: ``rnn`` (a deterministic next-frame predictor), ``rnn-nade`` (the same with a NADE
    output, Boulanger-Lewandowski et al. 2012; stored as model ``rnn``, output ``nade``) or ``vrnn``
    (Chung et al. 2015, ``rnnlab.models.vrnn``), ``lm`` (a language model on text,
    ``rnnlab.models.lm``), ``sentence-vae`` (Bowman et al. 2016) or ``sentence-lm`` (its
    baseline: a language model over independent sentences, ``rnnlab.models.sentence_vae``).
    ``output``: the distribution of a frame (``bernoulli``, ``nade``, ``gaussian`` diagonal,
    ``gmm`` a mixture of ``mixtures`` of them).
    """

    model: str = "rnn"
    output: str = "bernoulli"
    nade_size: int = 150  # the NADE's hidden units
    mixtures: int = 5  # components of the gmm output
    z_size: int = 32  # VRNN: latent units per step
    feature_size: int = 0  # VRNN: units of its feature, prior, encoder, decoder nets (0: hidden)
    embedding_size: int = 0  # LM: word embedding units (0: hidden_size)
    tied: bool = False  # LM: the output layer shares the embedding matrix
    variational: bool = False  # LM: one dropout mask per sequence on non-recurrent connections
    embedding_dropout: float = 0.0  # LM: whole words dropped from the embedding
    weight_drop: float = 0.0  # LM: DropConnect on the recurrent weights (Merity et al. 2017)
    init: float = 0.0  # LM: every weight uniform in [-init, init] (0: each module's own)
    word_dropout: float = 0.0  # sentence VAE: decoder inputs replaced by <unk> (training only)
    latent_every_step: bool = False  # sentence VAE: z also joins every decoder input
    cell: str = "gru"
    frame_size: int = 88
    hidden_size: int = 200
    num_layers: int = 1
    bidirectional: bool = False  # CTC recognisers: every layer reads both ways
    dropout: float = 0.3  # on non-recurrent connections: between layers and before the head
    layer_norm: bool = False
    forget_bias: float = 1.0
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    backend: str = "auto"  # auto, step (the reference loop) or fused; see rnnlab.recurrent
    chrono: int = 0  # chrono initialisation's T_max (Tallec & Ollivier 2018); 0: off
    cell_args: str = ""  # the cell's own arguments, name=value,... (Recurrent's cell_args)
    norm: str = "none"  # a step normalisation (rnnlab.cells.norms), or "layer"
    norm_steps: int = 100  # batch kinds: steps with their own statistics
    norm_window: int = 5  # assorted-time: steps its statistics span
    quant_bits: int = 0  # quantised training (0: off)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise unknown_name("model", self.model, MODELS)
        if self.output not in OUTPUTS:
            raise unknown_name("output", self.output, OUTPUTS)
        if self.model == "rnn-nade":  # shorthand, stored resolved
            object.__setattr__(self, "model", "rnn")
            object.__setattr__(self, "output", "nade")
        for key in ("nade_size", "mixtures", "z_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be positive, got {getattr(self, key)}")
        if self.cell not in CELLS:
            raise unknown_name("cell", self.cell, CELLS)
        if self.backend not in BACKENDS:
            raise unknown_name("backend", self.backend, BACKENDS)
        for key in ("dropout", "embedding_dropout", "weight_drop", "word_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"{key} must be in [0, 1), got {getattr(self, key)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config key(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


class SequenceLogProb(NamedTuple):
    """log_prob (B, T): log p(x_t | x_<t), zero on padding; total: its sum; num_frames: the
    number of real frames."""

    log_prob: Tensor
    total: Tensor
    num_frames: int

    @property
    def nll_per_frame(self) -> Tensor:
        return -self.total / self.num_frames


class RNNPredictor(nn.Module):
    """Recurrent stack over the previous frame, an output distribution (factorised Bernoulli or
    NADE) over the next.

    >>> model = RNNPredictor(ModelConfig(cell="lstm", hidden_size=8))
    >>> out = model(torch.zeros(2, 5, 88), torch.tensor([5, 3]))
    >>> out.num_frames
    8
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.rnn = make_recurrent(config, config.frame_size)
        self.head: Any = make_head(config)  # log_prob(x, h) and sample(h), see rnnlab.heads

    def forward(
        self, x: Tensor, lengths: Tensor, first_input: Tensor | None = None
    ) -> SequenceLogProb:
        """x (B, T, D) padded frames, lengths (B,); first_input (B, D) is the frame before x
        when x is a window cut from a longer piece (zeros, the default, at a piece's start)."""
        h, _ = self.rnn(previous_frames(x, first_input), lengths=lengths)  # (B, T, H)
        h = F.dropout(h, self.config.dropout, self.training)
        return frame_log_prob(self.head, x, h, lengths)

    @torch.no_grad()
    def sample(
        self, num_frames: int, batch_size: int = 1, generator: torch.Generator | None = None
    ) -> Tensor:
        """Ancestral sampling: (B, num_frames, D) in {0, 1}."""
        was_training = self.training
        self.eval()
        device = next(self.head.parameters()).device
        frame = torch.zeros(batch_size, 1, self.config.frame_size, device=device)
        state = None
        frames = []
        for _ in range(num_frames):
            h, state = self.rnn(frame, state=state)
            frame = self.head.sample(h, generator)
            frames.append(frame)
        self.train(was_training)
        return torch.cat(frames, dim=1)


def previous_frames(x: Tensor, first_input: Tensor | None = None) -> Tensor:
    """The input of a next-frame predictor: x_{t-1} at step t (B, T, D), ``first_input`` (or
    zeros) at the first step."""
    B, _, D = x.shape
    first = x.new_zeros(B, 1, D) if first_input is None else first_input.view(B, 1, D)
    return torch.cat([first, x[:, :-1]], dim=1)


def frame_log_prob(head: Any, x: Tensor, h: Tensor, lengths: Tensor) -> SequenceLogProb:
    """log p(x_t | h_t) per frame from a head, zero past each sequence's length."""
    T = x.shape[1]
    valid = torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]
    log_prob = torch.where(valid, head.log_prob(x, h), 0.0)  # (B, T)
    return SequenceLogProb(log_prob, log_prob.sum(), int(lengths.sum()))


def make_recurrent(config: ModelConfig, input_size: int, batch_first: bool = True) -> Recurrent:
    """The recurrent stack a ModelConfig describes, over inputs of ``input_size`` units."""
    return Recurrent(
        config.cell,
        input_size,
        config.hidden_size,
        config.num_layers,
        bidirectional=config.bidirectional,
        dropout=config.dropout,
        batch_first=batch_first,
        layer_norm=config.layer_norm,
        forget_bias=config.forget_bias,
        recurrent_dropout=config.recurrent_dropout,
        zoneout=config.zoneout,
        backend=config.backend,
        chrono=config.chrono,
        cell_args=parse_cell_args(config.cell, config.cell_args),
        norm=config.norm,
        norm_steps=config.norm_steps,
        norm_window=config.norm_window,
        quant_bits=config.quant_bits,
    )


def make_head(config: ModelConfig, hidden_size: int | None = None) -> nn.Module:
    """The output distribution of a frame given a state of ``hidden_size`` units (default: the
    config's), as the config names it."""
    H, D = hidden_size or config.hidden_size, config.frame_size
    if config.output == "nade":
        return NADEHead(H, D, config.nade_size)
    if config.output == "gaussian":
        return GaussianHead(H, D)
    if config.output == "gmm":
        return MixtureGaussianHead(H, D, config.mixtures)
    return BernoulliHead(H, D)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
