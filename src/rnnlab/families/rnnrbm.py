"""The RNN-RBM on polyphonic music (Boulanger-Lewandowski et al. 2012; ``rnnlab.models.rnnrbm``):
trained with CD-k, sampled by Gibbs chains, its likelihood estimated by annealed importance
sampling (AIS) of each frame's partition function.

Its NLL is never exact, so every figure is labelled an estimate and says how it was made:

- each epoch, the validation NLL per frame that selects the best epoch (and the test NLL at a
  new best) comes from one AIS run with ``--epoch-ais-chains`` chains and
  ``--epoch-ais-temperatures`` temperatures, from a fixed seed so that epochs are compared on the
  same noise (``valid_score``, ``test_score``: cheap, so biased: AIS's log Z is low on average,
  which makes the NLL low);
- after training, the test NLL per frame with ``--ais-chains`` and ``--ais-temperatures``,
  repeated ``--ais-runs`` times from independent seeds: result.json's ``test_ais_nll`` (the mean
  over runs), ``test_ais_nll_std`` (their standard deviation), ``test_ais_nll_runs`` and the
  settings.

The training cost is CD-k's free-energy gap, not a likelihood; the training column of the
metrics (``train_ais_nll``) is therefore not measured (NaN): an AIS estimate on every batch would
cost far more than the update.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnlab.console import progress
from rnnlab.data import Batch, make_batches
from rnnlab.device import model_device, to_device
from rnnlab.families.base import (
    WIDTH,
    Problem,
    RecurrentOptions,
    Score,
    default,
    model_config,
    option,
)
from rnnlab.families.music import MusicFamily, MusicProblem, RNNConfig
from rnnlab.models.rnnrbm import RNNRBM, uniform_betas

EPOCH_SEED, FINAL_SEED, CD_SEED = 2**40 + 21, 2**40 + 22, 2**40 + 23
AIS_FRAMES = 1024  # frames whose chains one AIS pass holds (memory: frames x chains x units)


@dataclass(frozen=True)
class RNNRBMConfig(RNNConfig):
    """An RNN-RBM. The defaults follow the paper's sizes as the deeplearning.net tutorial gives
    them (RBM 150 hidden units, recurrent layer 100 units, CD-15, 25 Gibbs rounds a sampled frame)
    with rnnlab's tanh RNN, no dropout, and Adam."""

    family: ClassVar[str] = "rnn-rbm"
    cell: str = default(RecurrentOptions, "cell", "tanh")
    hidden_size: int = default(RecurrentOptions, "hidden_size", 100)
    dropout: float = default(RecurrentOptions, "dropout", 0.0)
    lr: float = default(RNNConfig, "lr", 1e-3)
    rbm_size: int = option(150, "hidden units of each frame's RBM", positive=True, high=WIDTH)
    cd_k: int = option(15, "Gibbs rounds of contrastive divergence (CD-k) per training frame",
                       "training", positive=True, high=10_000)  # fmt: skip
    pretrain_epochs: int = option(
        0, "epochs of CD-k on single frames that initialise W, b_v, b_h before the RNN-RBM is "
        "trained (the paper's RBM pretraining; 0: none)", "training", low=0, high=10_000,
    )  # fmt: skip
    gibbs_steps: int = option(25, "Gibbs rounds that draw each frame of `rnnlab sample`",
                              positive=True, high=100_000)  # fmt: skip
    epoch_ais_chains: int = option(4, "AIS chains per frame of the per-epoch validation "
                                   "estimate (selects the best epoch)", "evaluation",
                                   positive=True, high=10_000)  # fmt: skip
    epoch_ais_temperatures: int = option(100, "AIS temperatures of the per-epoch estimate",
                                         "evaluation", positive=True, high=10**6)  # fmt: skip
    ais_chains: int = option(16, "AIS chains per frame of the final test estimate",
                             "evaluation", positive=True, high=10_000)  # fmt: skip
    ais_temperatures: int = option(500, "AIS temperatures (evenly spaced inverse temperatures "
                                   "from 0 to 1) of the final test estimate", "evaluation",
                                   positive=True, high=10**6)  # fmt: skip
    ais_runs: int = option(4, "independent AIS runs of the final test estimate (its spread is "
                           "their standard deviation; 0: no final estimate)", "evaluation",
                           low=0, high=1000)  # fmt: skip


@dataclass(frozen=True)
class AISResult:
    """The NLL per frame of a split estimated by AIS, ``runs`` times from independent seeds."""

    nll_runs: list[float]
    chains: int
    temperatures: int
    frames: int
    seconds: float

    @property
    def mean(self) -> float:
        return sum(self.nll_runs) / len(self.nll_runs)

    @property
    def std(self) -> float:
        """The sample standard deviation over runs (0 for one run)."""
        n = len(self.nll_runs)
        if n < 2:
            return 0.0
        return math.sqrt(sum((x - self.mean) ** 2 for x in self.nll_runs) / (n - 1))


@torch.no_grad()
def ais_nll(model: RNNRBM, sequences: list[Tensor], chains: int, temperatures: int, runs: int,
            seed: int, label: str = "") -> AISResult:  # fmt: skip
    """The NLL per frame of ``sequences``, -sum_t log P(v_t | v_<t) / frames with each log Z_t by
    AIS (``RNNRBM.ais_log_prob``), repeated ``runs`` times with seeds seed, seed + 1, ..."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    betas = uniform_betas(temperatures)
    start, nll_runs, frames = time.perf_counter(), [], 0
    for r in range(runs):
        generator = torch.Generator().manual_seed(seed + r)
        total, frames = 0.0, 0
        batches = make_batches(sequences, max(1, AIS_FRAMES // 64), shuffle=False)
        what = f"AIS{label}, run {r + 1}/{runs} ({chains} chains, {temperatures} temperatures)"
        for batch in progress(batches, what):
            batch = to_device(batch, device)
            log_p = model.ais_log_prob(batch.x, batch.lengths, chains, betas, generator)
            total += float(log_p.sum())
            frames += int(batch.lengths.sum())
        nll_runs.append(-total / frames)
    model.train(was_training)
    return AISResult(nll_runs, chains, temperatures, frames, time.perf_counter() - start)


class RNNRBMProblem(MusicProblem):
    """Music with an RNN-RBM: CD-k updates, AIS estimates (module docstring)."""

    def __init__(self, cfg: RNNRBMConfig, model: nn.Module) -> None:
        super().__init__(cfg, model)
        self.generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + CD_SEED)
        self.final: dict[str, Any] = {}

    def train_batches(self, epoch: int) -> Iterable[Batch]:
        # The CD chains' noise of each epoch depends only on (seed, epoch): a resumed run draws
        # what the uninterrupted one would have.
        self.generator.manual_seed(self.cfg.seed * 1_000_003 + CD_SEED + epoch)
        if epoch == 1 and self.cfg.pretrain_epochs:
            self.pretrain()
        return super().train_batches(epoch)

    def pretrain(self) -> None:
        """CD-k on the training frames taken alone, fitting W, b_v and b_h (Adam, --lr, batches
        of --batch-size x 64 frames shuffled from the seed)."""
        model: RNNRBM = self.model  # type: ignore[assignment]
        frames = torch.cat(self.data["train"]).to(model_device(model))
        optimizer = torch.optim.Adam(model.rbm_parameters(), lr=self.cfg.lr)
        order_gen = torch.Generator().manual_seed(self.cfg.seed)
        size = self.cfg.batch_size * 64
        for _ in progress(range(self.cfg.pretrain_epochs), "RBM pretraining"):
            order = torch.randperm(len(frames), generator=order_gen)
            for i in range(0, len(frames), size):
                cost = model.pretrain_cost(frames[order[i : i + size]], self.cfg.cd_k,
                                           self.generator)  # fmt: skip
                optimizer.zero_grad(set_to_none=True)
                cost.backward()
                optimizer.step()

    def batch_loss(self, batch: Batch) -> tuple[torch.Tensor, float, float]:
        cost = self.model.contrastive_cost(batch.x, batch.lengths, self.cfg.cd_k,  # type: ignore[operator]
                                           self.generator, batch.first_input)  # fmt: skip
        return cost.per_frame, math.nan, cost.num_frames

    def evaluate(self, split: str) -> dict[str, Any]:
        """One AIS run with the per-epoch settings, from a fixed seed."""
        cfg = self.cfg
        est = ais_nll(self.model, self.data[split], cfg.epoch_ais_chains,  # type: ignore[arg-type]
                      cfg.epoch_ais_temperatures, 1, EPOCH_SEED, f" {split}")  # fmt: skip
        return {"score": est.mean, "frames": est.frames}

    def finalise(self) -> None:
        cfg = self.cfg
        if not cfg.ais_runs:
            return
        est = ais_nll(self.model, self.data["test"], cfg.ais_chains,  # type: ignore[arg-type]
                      cfg.ais_temperatures, cfg.ais_runs, FINAL_SEED, " test")  # fmt: skip
        self.final = {
            "test_ais_nll": est.mean,
            "test_ais_nll_std": est.std,
            "test_ais_nll_runs": est.nll_runs,
            "ais_runs": len(est.nll_runs),
            "ais_chains": est.chains,
            "ais_temperatures": est.temperatures,
            "ais_schedule": "uniform inverse temperatures from 0 to 1",
            "ais_seconds": round(est.seconds, 1),
        }

    def result(self, valid: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
        return {"valid_ais_nll_epoch_estimate": valid.get("score"),
                "test_ais_nll_epoch_estimate": test.get("score"),
                "epoch_ais_chains": self.cfg.epoch_ais_chains,
                "epoch_ais_temperatures": self.cfg.epoch_ais_temperatures,
                **self.final}  # fmt: skip


class RNNRBMFamily(MusicFamily):
    name = "rnn-rbm"
    title = "music: the RNN-RBM (Boulanger-Lewandowski et al. 2012), CD-k, AIS NLL estimate"
    config_type = RNNRBMConfig
    score = Score("ais_nll", "NLL (AIS estimate)", "nats/frame")
    implied_by_data = False  # music data implies the plain RNN; the RNN-RBM is asked for by name

    def build_model(self, cfg: Any, assets: dict[str, Any]) -> nn.Module:
        frames = int(assets.get("data", {}).get("frame_size", 88))
        recurrent = model_config(cfg, "rnn", "bernoulli", frame_size=frames)  # output unused
        return RNNRBM(recurrent, cfg.rbm_size, cfg.gibbs_steps)

    def problem(self, cfg: Any, assets: dict[str, Any] | None = None) -> Problem:
        return RNNRBMProblem(cfg, self.build_model(cfg, assets or {}))

    def summary(self, result: dict[str, Any], out: Any) -> str:
        final = result.get("test_ais_nll")
        final_text = "no final estimate (--ais-runs 0)" if final is None else (
            f"test NLL estimate {final:.4f} +/- {result['test_ais_nll_std']:.4f} nats/frame (AIS: "
            f"mean +/- std over {result['ais_runs']} runs of {result['ais_chains']} chains, "
            f"{result['ais_temperatures']} temperatures)")  # fmt: skip
        return (f"{result['data']} rnn-rbm/{result['cell']}: {final_text}, at the best "
                f"validation epoch {result['best_epoch']}; {result['num_params']:,} parameters, "
                f"{result['wall_time_s']:.0f} s; run: {out}")  # fmt: skip
