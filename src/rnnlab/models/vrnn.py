"""The variational RNN (Chung et al. 2015), with any cell of the zoo as its recurrence.

At each step t, with h_{t-1} the recurrent state (zeros at the start):

    prior      p(z_t | h_{t-1})        = N(mu_0, sigma_0^2),  [mu_0, log sigma_0^2] = prior(h_{t-1})
    posterior  q(z_t | x_t, h_{t-1})   = N(mu_z, sigma_z^2),  from enc([phi_x(x_t), h_{t-1}])
    generation p(x_t | z_t, h_{t-1})   = the output head on dec([phi_z(z_t), h_{t-1}])
    recurrence h_t = cell(h_{t-1}, [phi_x(x_t), phi_z(z_t)])

phi_x, phi_z, prior, enc and dec are one-hidden-layer ReLU networks of ``feature_size`` units. The
per-step terms are returned, not reduced: ``log_lik`` = log p(x_t | z_t, h_{t-1}) at the sampled
z_t, and ``kl`` = KL(q || p) in closed form; the ELBO is their difference summed over steps
(``rnnlab.losses``). ``log_weights`` adds the importance weights log p(z_t | h) - log q(z_t | x, h)
summed over steps, for the IW estimate of log p(x). The posterior's z_t feeds the recurrence, so
the loop runs step by step (the cell's ``project_input`` and ``step``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from rnnlab import device as draw
from rnnlab.cells import make_cell, probe_cell
from rnnlab.cells.base import Cell, CellOptions
from rnnlab.errors import ConfigError
from rnnlab.losses import gaussian_kl, gaussian_log_prob, importance_weighted_bound
from rnnlab.models.rnn import ModelConfig, make_head
from rnnlab.recurrent import check_cell_args, parse_cell_args


class VRNNTerms(NamedTuple):
    """Per-step terms (B, T), zero on padding, and the number of real frames."""

    log_lik: Tensor
    kl: Tensor
    log_ratio: Tensor  # log p(z_t | h) - log q(z_t | x, h) at the sampled z_t
    num_frames: int

    def neg_elbo_per_frame(self, kl_weight: float = 1.0) -> Tensor:
        return -(self.log_lik - kl_weight * self.kl).sum() / self.num_frames

    @property
    def total(self) -> Tensor:
        """The ELBO summed over every frame (the quantity a model is selected on)."""
        return (self.log_lik - self.kl).sum()

    @property
    def log_weights(self) -> Tensor:
        """(B,) log p(x, z) - log q(z | x) of each sequence's sampled trajectory."""
        return (self.log_lik + self.log_ratio).sum(1)


def _mlp(inputs: int, size: int, outputs: int | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(inputs, size), nn.ReLU()]
    if outputs is not None:
        layers.append(nn.Linear(size, outputs))
    return nn.Sequential(*layers)


class VRNN(nn.Module):
    """>>> model = VRNN(ModelConfig(model="vrnn", cell="gru", hidden_size=8, z_size=2, dropout=0))
    >>> terms = model(torch.zeros(2, 5, 88), torch.tensor([5, 3]))
    >>> tuple(terms.kl.shape), terms.num_frames
    ((2, 5), 8)
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        unsupported = [k for k in ("dropout", "recurrent_dropout", "zoneout") if getattr(config, k)]
        if unsupported or config.num_layers != 1:
            raise ConfigError(
                f"the VRNN has one recurrent layer and no {', '.join(unsupported) or 'dropout'}; "
                f"got num_layers={config.num_layers}"
                + "".join(f", {k}={getattr(config, k)}" for k in unsupported)
            )
        self.config = config
        H, Z, D = config.hidden_size, config.z_size, config.frame_size
        F_ = config.feature_size or H
        self.phi_x = _mlp(D, F_)
        self.phi_z = _mlp(Z, F_)
        self.prior = _mlp(H, F_, 2 * Z)
        self.encoder = _mlp(F_ + H, F_, 2 * Z)
        self.decoder = _mlp(F_ + H, F_)
        self.head: Any = make_head(config, hidden_size=F_)
        args = check_cell_args(config.cell, parse_cell_args(config.cell, config.cell_args))
        options = CellOptions(layer_norm=config.layer_norm, forget_bias=config.forget_bias,
                              args=tuple(sorted(args.items())))  # fmt: skip
        refusal = probe_cell(config.cell).refusal("layer_norm") if config.layer_norm else None
        if config.norm not in ("none", "layer") or config.quant_bits:
            raise ConfigError(
                "the VRNN steps its cell itself, outside Recurrent: --norm "
                f"{config.norm} and --quant-bits apply in other families"
            )
        if config.norm == "layer":
            options = replace(options, layer_norm=True)
            refusal = probe_cell(config.cell).refusal("layer_norm")
        if refusal is not None:
            raise ConfigError(f"cell {config.cell!r}: {refusal}")
        if type(probe_cell(config.cell)).penalty is not Cell.penalty:
            raise ConfigError(
                f"the VRNN steps its cell itself, outside Recurrent, where cell {config.cell!r}'s "
                "training penalty is formed; use it in another family"
            )
        self.cell = make_cell(config.cell, 2 * F_, H, options)

    def forward(
        self,
        x: Tensor,
        lengths: Tensor,
        first_input: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> VRNNTerms:
        """x (B, T, D) padded frames, lengths (B,). ``first_input`` is accepted for the training
        loop's sake and must be None: a VRNN's window would need the state, not a frame."""
        if first_input is not None:
            raise ValueError("the VRNN trains on whole pieces (no --window)")
        B, T, _ = x.shape
        valid = torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]
        fx_all = self.phi_x(x)  # (B, T, F): every step at once
        state = self.cell.initial_state(B, x)
        log_lik, kl, ratio = [], [], []
        for t in range(T):
            h = state[0]
            fx = fx_all[:, t]
            mean_p, log_var_p = self.prior(h).chunk(2, -1)
            mean_q, log_var_q = self.encoder(torch.cat([fx, h], -1)).chunk(2, -1)
            noise = draw.normal(mean_q.shape, generator, mean_q)
            z = mean_q + (0.5 * log_var_q).exp() * noise
            fz = self.phi_z(z)
            log_lik.append(self.head.log_prob(x[:, t], self.decoder(torch.cat([fz, h], -1))))
            kl.append(gaussian_kl(mean_q, log_var_q, mean_p, log_var_p))
            ratio.append(
                gaussian_log_prob(z, mean_p, log_var_p) - gaussian_log_prob(z, mean_q, log_var_q)
            )
            new = self.cell.step(self.cell.project_input(torch.cat([fx, fz], -1)), state, None)
            v = valid[:, t, None]
            state = tuple(torch.where(v, n, s) for n, s in zip(new, state, strict=True))
        mask = valid.to(x.dtype)
        stack = [torch.stack(terms, 1) * mask for terms in (log_lik, kl, ratio)]
        return VRNNTerms(stack[0], stack[1], stack[2], int(lengths.sum()))

    @torch.no_grad()
    def iw_log_likelihood(
        self, x: Tensor, lengths: Tensor, k: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """(B,) importance-weighted estimate of log p(x) with k posterior trajectories each."""
        B = x.shape[0]
        xs = x.repeat(k, 1, 1)  # (k B, T, D), trajectory i of sequence b at i * B + b
        terms = self(xs, lengths.repeat(k), generator=generator)
        return importance_weighted_bound(terms.log_weights.view(k, B), dim=0)

    @torch.no_grad()
    def sample(
        self, num_frames: int, batch_size: int = 1, generator: torch.Generator | None = None
    ) -> Tensor:
        """Ancestral sampling from the prior: (B, num_frames, D)."""
        was_training = self.training
        self.eval()
        weight = next(self.parameters())
        x0 = weight.new_zeros(batch_size, 1, self.config.frame_size)
        state = self.cell.initial_state(batch_size, x0)
        frames = []
        for _ in range(num_frames):
            h = state[0]
            mean_p, log_var_p = self.prior(h).chunk(2, -1)
            noise = draw.normal(mean_p.shape, generator, mean_p)
            fz = self.phi_z(mean_p + (0.5 * log_var_p).exp() * noise)
            frame = self.head.sample(self.decoder(torch.cat([fz, h], -1)), generator)
            frames.append(frame)
            fx = self.phi_x(frame)
            state = self.cell.step(self.cell.project_input(torch.cat([fx, fz], -1)), state, None)
        self.train(was_training)
        return torch.stack(frames, 1)
