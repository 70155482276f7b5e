"""The gated convolutional network (GCNN) of Dauphin, Fan, Auli & Grangier 2017, "Language
Modeling with Gated Convolutional Networks", as a next-frame predictor with the music families'
Bernoulli output (beside ``rnnlab.models.tcn`` and the recurrent ``RNNPredictor``).

The blocks are those of the GCNN language model (``rnnlab.models.conv_lm.GatedBlock``): every
convolution is a gated linear unit (Dauphin et al., Eq. 1)::

    h_l(X) = (X * W + b) ⊗ σ(X * V + c)            W, V: (k, C_in, C_out), * causal convolution

and a residual block adds its input to two GLUs of kernel k (plain) or to a 1x1 GLU down to
C/4, a GLU of kernel k and a 1x1 GLU back up (``bottleneck``, Sec. 2); dropout follows every GLU;
the convolutions are weight-normalised (Salimans & Kingma 2016), He-initialised, not dilated.
Over the previous frames x_{<t} (zeros before the first)::

    e = P x_{t-1}                   P: a 1x1 convolution, 88 keys -> C channels (torch's init)
    h = blocks(e)                   ``num_layers`` residual blocks of C channels, causal
    p(x_t | x_<t) = prod_k Bernoulli(x_{t,k}; σ(W_o Dropout(h_t) + b_o)_k)

The 1x1 projection of a frame of keys is the language model's embedding lookup for a
multi-hot input: the sum of the sounding keys' columns of P, plus a bias. Each convolution of
kernel k reaches k - 1 frames back, so the receptive field of L blocks is

    R = 1 + 2 (k - 1) L  frames (plain),    R = 1 + (k - 1) L  (bottleneck).

Forward and sampling (autoregressive, over the last R inputs) are ``CausalFramePredictor``'s,
shared with the TCN.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch  # noqa: F401 (the docstring example uses it)
from torch import Tensor, nn

from rnnlab.errors import ConfigError
from rnnlab.heads import BernoulliHead
from rnnlab.models.conv_lm import GatedBlock, gcnn_receptive_field
from rnnlab.models.tcn import CausalFramePredictor


@dataclass(frozen=True)
class GCNNConfig:
    """The architecture: a 1x1 projection of ``frame_size`` keys to ``hidden_size`` channels,
    ``num_layers`` gated residual blocks (``bottleneck`` or plain) of kernel ``kernel_size``,
    ``dropout`` after every GLU and before the output."""

    frame_size: int = 88
    hidden_size: int = 128
    num_layers: int = 4
    kernel_size: int = 4
    dropout: float = 0.25
    bottleneck: bool = False

    def __post_init__(self) -> None:
        if self.bottleneck and self.hidden_size < 4:
            raise ConfigError(f"bottleneck blocks need at least 4 channels, got {self.hidden_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GCNNPredictor(CausalFramePredictor):
    """A GCNN over the previous frames, a factorised Bernoulli over the next (module docstring).

    Parameters: ``input_proj`` (C, D, 1) weight and (C,) bias; ``blocks``: ``GatedBlock`` s of
    C channels (each GLU one weight-normalised convolution of 2 C outputs, A then gate B);
    ``head``: a ``BernoulliHead`` (D, C).

    >>> model = GCNNPredictor(GCNNConfig(hidden_size=8, num_layers=2, kernel_size=3))
    >>> out = model(torch.zeros(2, 5, 88), torch.tensor([5, 3]))
    >>> out.num_frames, model.receptive_field, tuple(model.sample(4, 2).shape)
    (8, 9, (2, 4, 88))
    """

    def __init__(self, config: GCNNConfig) -> None:
        super().__init__()
        self.config = config
        C = config.hidden_size
        self.input_proj = nn.Conv1d(config.frame_size, C, 1)
        self.blocks = nn.ModuleList(
            GatedBlock(C, C, config.kernel_size, config.dropout, config.bottleneck)
            for _ in range(config.num_layers)
        )
        self.head = BernoulliHead(C, config.frame_size)

    @property
    def receptive_field(self) -> int:
        c = self.config
        return gcnn_receptive_field(c.num_layers, c.kernel_size, c.bottleneck)

    def features(self, inputs: Tensor) -> Tensor:
        """(B, T, D) inputs -> (B, T, C): the last block's output, causal in time."""
        h = self.input_proj(inputs.transpose(1, 2))  # (B, C, T): channels first, for Conv1d
        for block in self.blocks:
            h = block(h)
        return h.transpose(1, 2)
