"""Training the VRNN on polyphonic music: the negative ELBO per frame as the training loss (with
optional linear KL annealing) and the selection score, and after training an importance-weighted
estimate of the test NLL with k samples. result.json keeps the two apart (``test_neg_elbo``, an
upper bound of the NLL, and ``test_iw_nll`` with ``iw_samples``); neither is called an NLL alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnlab.data import Batch, make_batches
from rnnlab.errors import ConfigError
from rnnlab.models.vrnn import VRNN
from rnnlab.train.checkpoint import load_model_weights
from rnnlab.train.config import RunConfig
from rnnlab.train.loop import MODEL, MusicProblem

EVAL_SEED, IW_SEED = 2**40 + 11, 2**40 + 12


class VRNNProblem(MusicProblem):
    score = "neg_elbo"

    def __init__(self, cfg: RunConfig) -> None:
        if cfg.train.window:
            raise ConfigError("the VRNN trains on whole pieces: --window is not supported")
        super().__init__(cfg)
        self.kl_weight = 1.0
        self.iw: dict[str, Any] = {}

    def build_model(self) -> nn.Module:
        return VRNN(self.cfg.model)

    def train_batches(self, epoch: int) -> Any:
        anneal = self.cfg.train.kl_anneal
        self.kl_weight = min(1.0, epoch / anneal) if anneal else 1.0
        return super().train_batches(epoch)

    def batch_loss(self, batch: Batch) -> tuple[torch.Tensor, float, float]:
        terms = self.model(batch.x, batch.lengths)
        loss = terms.neg_elbo_per_frame(self.kl_weight)
        return loss, -float(terms.total.detach()), terms.num_frames

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, Any]:
        """The negative ELBO per frame (one posterior sample per sequence, from a fixed seed so
        that epochs are compared on the same noise) and the KL per frame."""
        model = self.model
        was_training = model.training
        model.eval()
        generator = torch.Generator().manual_seed(EVAL_SEED)
        elbo, kl, frames = 0.0, 0.0, 0
        for batch in make_batches(self.data[split], 64, shuffle=False):
            terms = model(batch.x, batch.lengths, generator=generator)
            elbo += float(terms.total.double())
            kl += float(terms.kl.sum().double())
            frames += terms.num_frames
        model.train(was_training)
        return {"score": -elbo / frames, "kl_per_frame": kl / frames}

    @torch.no_grad()
    def finalise(self, out: Path) -> None:
        """The IW estimate of the test NLL per frame, with the best-validation weights."""
        if not (out / MODEL).is_file():
            return
        model = VRNN(self.cfg.model)
        load_model_weights(out / MODEL, model)
        model.eval()
        k = self.cfg.train.iw_samples
        generator = torch.Generator().manual_seed(IW_SEED)
        total, frames = 0.0, 0
        for batch in make_batches(self.data["test"], max(1, 2048 // k), shuffle=False):
            total += float(model.iw_log_likelihood(batch.x, batch.lengths, k, generator).sum())
            frames += int(batch.lengths.sum())
        self.iw = {"test_iw_nll": -total / frames, "iw_samples": k}

    def result(self, valid: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
        return {
            "valid_neg_elbo": valid.get("score"),
            "test_neg_elbo": test.get("score"),
            "test_kl_per_frame": test.get("kl_per_frame"),
            **self.iw,
        }
