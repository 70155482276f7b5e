"""The temporal convolutional network (TCN) of Bai, Kolter & Koltun 2018, "An Empirical
Evaluation of Generic Convolutional and Recurrent Networks for Sequence Modeling", as a
next-frame predictor with the music families' Bernoulli output.

A residual block of level i (dilation d = 2^i, kernel size k, Sec. 3 and Fig. 1 of the paper)::

    z = Dropout(ReLU(WeightNorm(CausalConv_d(x))))
    z = Dropout(ReLU(WeightNorm(CausalConv_d(z))))
    y = ReLU(z + R x)          R: a 1x1 convolution where the widths differ, else the identity

A causal convolution of dilation d pads (k - 1) d zeros on the left only, so that y_t depends on
x_t, x_{t-1}, ... and never on a later input. Each of a block's two convolutions reaches
(k - 1) d steps back; the receptive field of ``levels`` blocks is therefore

    R = 1 + 2 (k - 1) (2^levels - 1)  frames.

Convolution weights are drawn from N(0, 0.01^2) (the paper's Sec. 4.1 initialisation) before the
weight normalisation (Salimans & Kingma 2016) splits each into a direction and a gain.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from rnnlab.heads import BernoulliHead
from rnnlab.models.rnn import SequenceLogProb, frame_log_prob, previous_frames


def receptive_field(levels: int, kernel_size: int) -> int:
    """Frames an output of ``levels`` residual blocks sees (its own included).

    >>> receptive_field(4, 5), receptive_field(2, 3), receptive_field(1, 2)
    (121, 13, 3)
    """
    return 1 + 2 * (kernel_size - 1) * (2**levels - 1)


class CausalConv1d(nn.Module):
    """A weight-normalised dilated convolution, (B, C_in, T) -> (B, C_out, T), whose output at t
    sees inputs t - (k-1) d, ..., t only (left zero padding). Weights are drawn from
    N(0, ``std``^2) (Bai et al.'s 0.01), or, with ``std=None``, torch's default (He et al.'s
    uniform, as Dauphin et al. 2017 initialise their gated convolutions)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 dilation: int, std: float | None = 0.01) -> None:  # fmt: skip
        super().__init__()
        self.left = (kernel_size - 1) * dilation
        conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)
        if std is not None:
            nn.init.normal_(conv.weight, 0.0, std)
        self.conv = weight_norm(conv)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (self.left, 0)))


class TemporalBlock(nn.Module):
    """One residual block (module docstring): two causal convolutions of dilation ``dilation``
    with ReLU and dropout, and the residual path (``downsample``: a 1x1 convolution where
    ``in_channels != out_channels``, else None)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int,
                 dropout: float) -> None:  # fmt: skip
        super().__init__()
        self.conv1 = CausalConv1d(in_channels, out_channels, kernel_size, dilation)
        self.conv2 = CausalConv1d(out_channels, out_channels, kernel_size, dilation)
        self.dropout = dropout
        self.downsample: nn.Conv1d | None = None
        if in_channels != out_channels:
            self.downsample = nn.Conv1d(in_channels, out_channels, 1)
            nn.init.normal_(self.downsample.weight, 0.0, 0.01)

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, T) -> (B, C_out, T)
        z = F.dropout(F.relu(self.conv1(x)), self.dropout, self.training)
        z = F.dropout(F.relu(self.conv2(z)), self.dropout, self.training)
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(z + residual)


@dataclass(frozen=True)
class TCNConfig:
    """The architecture: ``num_layers`` residual blocks (the paper's levels) of ``hidden_size``
    channels, kernel size ``kernel_size``, dropout after every convolution."""

    frame_size: int = 88
    hidden_size: int = 150
    num_layers: int = 4
    kernel_size: int = 5
    dropout: float = 0.25

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CausalFramePredictor(nn.Module):
    """What a convolutional next-frame predictor shares (the TCN here, the GCNN of
    ``rnnlab.models.gcnn``): frame t's keys are predicted from frames < t (the input at t is
    x_{t-1}, zeros before the first frame, as ``RNNPredictor``), so the first frame counts in
    the NLL like every other; dropout on the features, then a ``BernoulliHead``.

    A subclass sets ``config`` (with ``frame_size`` and ``dropout``) and ``head``, and defines
    ``features`` ((B, T, D) inputs -> (B, T, H), causal in time) and ``receptive_field``."""

    config: Any
    head: BernoulliHead

    def features(self, inputs: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def receptive_field(self) -> int:
        raise NotImplementedError

    def forward(
        self, x: Tensor, lengths: Tensor, first_input: Tensor | None = None
    ) -> SequenceLogProb:
        """x (B, T, D) padded frames, lengths (B,); first_input (B, D): the frame before x
        (zeros, the default, at a piece's start). Padding lies after each piece's end, so
        causality keeps it out of every real frame's prediction."""
        h = self.features(previous_frames(x, first_input))  # (B, T, H)
        h = F.dropout(h, self.config.dropout, self.training)
        return frame_log_prob(self.head, x, h, lengths)

    @torch.no_grad()
    def sample(
        self, num_frames: int, batch_size: int = 1, generator: torch.Generator | None = None
    ) -> Tensor:
        """Ancestral sampling, frame by frame: (B, num_frames, D) in {0, 1}. Each frame's
        features are recomputed over the last ``receptive_field`` inputs only, which give the
        same value as the whole history (no output sees further back)."""
        was_training = self.training
        self.eval()
        device = next(self.head.parameters()).device
        inputs = torch.zeros(batch_size, 1, self.config.frame_size, device=device)
        frames = []
        for _ in range(num_frames):
            h = self.features(inputs[:, -self.receptive_field :])[:, -1:]  # (B, 1, H)
            frame = self.head.sample(h, generator)
            frames.append(frame)
            inputs = torch.cat([inputs, frame], dim=1)
        self.train(was_training)
        return torch.cat(frames, dim=1)


class TCNPredictor(CausalFramePredictor):
    """A TCN over the previous frames, a factorised Bernoulli over the next (forward, sampling:
    ``CausalFramePredictor``).

    >>> model = TCNPredictor(TCNConfig(hidden_size=8, num_layers=2, kernel_size=3))
    >>> out = model(torch.zeros(2, 5, 88), torch.tensor([5, 3]))
    >>> out.num_frames, model.receptive_field
    (8, 13)
    """

    def __init__(self, config: TCNConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.frame_size] + [config.hidden_size] * config.num_layers
        self.blocks = nn.ModuleList(
            TemporalBlock(widths[i], widths[i + 1], config.kernel_size, 2**i, config.dropout)
            for i in range(config.num_layers)
        )
        self.head = BernoulliHead(config.hidden_size, config.frame_size)

    @property
    def receptive_field(self) -> int:
        return receptive_field(self.config.num_layers, self.config.kernel_size)

    def features(self, inputs: Tensor) -> Tensor:
        """(B, T, D) inputs -> (B, T, H): the last block's output, causal in time."""
        h = inputs.transpose(1, 2)  # (B, D, T): channels first, as Conv1d takes them
        for block in self.blocks:
            h = block(h)
        return h.transpose(1, 2)
