"""The variational RNN (Chung et al. 2015) on polyphonic music: the negative ELBO per frame as the
training loss (its KL term weighted by ``--kl-schedule`` over ``--kl-anneal`` epochs) and the
selection score, and after training an importance-weighted estimate of the test NLL with k
samples. result.json keeps the two apart (``test_neg_elbo``, an upper bound of the NLL, and
``test_iw_nll`` with ``iw_samples``); neither is called an NLL alone.

The VRNN has one recurrent layer and no dropout (the paper's setting): its config has no such
options, so ``--num-layers`` or ``--dropout`` is refused rather than ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from rnnlab.console import progress
from rnnlab.data import Batch, make_batches
from rnnlab.device import model_device, to_device
from rnnlab.families.base import (
    WIDTH,
    Problem,
    RecurrentOptions,
    Score,
    TrainOptions,
    affordable_samples,
    default,
    model_config,
    option,
)
from rnnlab.families.music import MusicFamily, MusicProblem
from rnnlab.losses import KL_SCHEDULES, kl_weight
from rnnlab.models.rnn import OUTPUTS
from rnnlab.models.vrnn import VRNN

EVAL_SEED, IW_SEED = 2**40 + 11, 2**40 + 12


@dataclass(frozen=True)
class VRNNConfig(TrainOptions):
    family: ClassVar[str] = "vrnn"
    cell: str = default(RecurrentOptions, "cell", "gru")
    hidden_size: int = default(RecurrentOptions, "hidden_size", 200)
    layer_norm: bool = default(RecurrentOptions, "layer_norm", False)
    forget_bias: float = default(RecurrentOptions, "forget_bias", 1.0)
    output: str = option("bernoulli", "the distribution of a frame: bernoulli, nade, gaussian or "
                         "gmm", choices=OUTPUTS)  # fmt: skip
    nade_size: int = option(150, "hidden units of the NADE output", positive=True, high=WIDTH,
                            requires={"output": ("nade",)})  # fmt: skip
    mixtures: int = option(5, "components of the gmm output", positive=True, high=1024,
                           requires={"output": ("gmm",)})  # fmt: skip
    z_size: int = option(32, "latent units per step", positive=True, high=WIDTH)
    feature_size: int = option(0, "units of the feature, prior, encoder and decoder nets "
                               "(0: the hidden size)", low=0, high=WIDTH)  # fmt: skip
    kl_anneal: int = option(0, "the KL weight rises from 0 to 1 over this many epochs (0: off)",
                            "training", low=0)  # fmt: skip
    kl_schedule: str = option("linear", "KL annealing: linear, logistic or cyclical", "training",
                              choices=KL_SCHEDULES)  # fmt: skip
    iw_samples: int = option(0, "samples k of the importance-weighted test NLL estimate (0: "
                             "as many as cost about one training epoch, at most 100)",
                             "evaluation", low=0, high=10**5)  # fmt: skip


class VRNNProblem(MusicProblem):
    def __init__(self, cfg: VRNNConfig, model: nn.Module) -> None:
        super().__init__(cfg, model)
        self.kl_weight = 1.0
        self.iw: dict[str, Any] = {}

    def train_batches(self, epoch: int) -> Any:
        self.kl_weight = kl_weight(self.cfg.kl_schedule, epoch, self.cfg.kl_anneal)
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
            batch = to_device(batch, model_device(model))
            terms = model(batch.x, batch.lengths, generator=generator)
            elbo += float(terms.total.double())
            kl += float(terms.kl.sum().double())
            frames += terms.num_frames
        model.train(was_training)
        return {"score": -elbo / frames, "kl_per_frame": kl / frames}

    def finalise(self) -> None:
        frames = {s: sum(len(p) for p in self.data[s]) for s in ("train", "test")}
        k = self.cfg.iw_samples or affordable_samples(frames["train"], frames["test"])
        self.iw = self.importance_weighted("test", k)

    @torch.no_grad()
    def importance_weighted(self, split: str, k: int) -> dict[str, Any]:
        """The IW estimate of a split's NLL per frame with k posterior trajectories a piece."""
        model = self.model
        was_training = model.training
        model.eval()
        generator = torch.Generator().manual_seed(IW_SEED)
        total, frames = 0.0, 0
        batches = make_batches(self.data[split], max(1, 2048 // k), shuffle=False)
        for batch in progress(batches, f"importance-weighted NLL, {split} (k={k})"):
            batch = to_device(batch, model_device(model))
            log_p = model.iw_log_likelihood(batch.x, batch.lengths, k, generator)  # type: ignore[operator]
            total += float(log_p.sum())
            frames += int(batch.lengths.sum())
        model.train(was_training)
        return {f"{split}_iw_nll": -total / frames, "iw_samples": k}

    def result(self, valid: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
        return {"valid_neg_elbo": valid.get("score"), "test_neg_elbo": test.get("score"),
                "test_kl_per_frame": test.get("kl_per_frame"), **self.iw}  # fmt: skip


class VRNNFamily(MusicFamily):
    name = "vrnn"
    title = "music: the variational RNN (Chung et al. 2015), -ELBO and an IW NLL estimate"
    config_type = VRNNConfig
    score = Score("neg_elbo", "-ELBO (bound)", "nats/frame")
    latent = True

    implied_by_data = False  # music data implies the plain RNN; the VRNN is asked for by name

    def build_model(self, cfg: Any, assets: dict[str, Any]) -> nn.Module:
        frames = int(assets.get("data", {}).get("frame_size", 88))
        model_cfg = model_config(
            cfg, "vrnn", cfg.output, frame_size=frames, nade_size=cfg.nade_size,
            mixtures=cfg.mixtures, z_size=cfg.z_size, feature_size=cfg.feature_size,
        )  # fmt: skip
        return VRNN(model_cfg)

    def problem(self, cfg: Any, assets: dict[str, Any] | None = None) -> Problem:
        return VRNNProblem(cfg, self.build_model(cfg, assets or {}))

    def summary(self, result: dict[str, Any], out: Any) -> str:
        iw = result.get("test_iw_nll")
        iw_text = "n/a" if iw is None else f"{iw:.4f} (k={result['iw_samples']})"
        neg_elbo = result.get("test_neg_elbo")
        neg_elbo_text = "n/a" if neg_elbo is None else f"{neg_elbo:.4f}"
        return (
            f"{result['data']} vrnn/{result['cell']}: test negative ELBO {neg_elbo_text} "
            f"nats/frame (a bound), importance-weighted test NLL {iw_text}, at the best "
            f"validation epoch {result['best_epoch']}; {result['num_params']:,} parameters, "
            f"{result['wall_time_s']:.0f} s; run: {out}"
        )
