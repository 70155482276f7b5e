"""``ctc``: deep bidirectional recurrent phone recognisers trained with CTC (Graves, Mohamed &
Hinton 2013; ``rnnlab.models.ctc``), scored by the phone error rate (PER, %: edit distance over
reference phones, ``rnnlab.data.speech``).

Data (``--data``):

- ``espeak-synth``: the corpus ``rnnlab data make-speech`` synthesises with espeak-ng into the
  data cache (``rnnlab.data.synth_speech``; speaker-disjoint splits, its own phone set), or a
  directory holding one (``corpus.npz`` + ``manifest.json``);
- a TIMIT directory (the one holding ``TRAIN`` and ``TEST``, ``rnnlab.data.timit``): training
  on the SI and SX sentences of the 462 training speakers, validation on the 50-speaker
  development set, testing on the 24-speaker core test set; ``--phones 61`` trains on TIMIT's
  61 phones (Graves et al.) or ``39`` on the folded set, and the PER is always scored on the 39
  classes of Lee & Hon 1989, as the literature reports it.

Features: 40 log-mel filterbank energies and the log energy every 10 ms (25 ms windows),
computed in the project, normalised per coefficient by the training set's mean and deviation
(kept in the model's buffers, so a run directory decodes new audio alone). Each epoch validates
with greedy (best path) decoding, and so is the test set at each best epoch; once training ends
the test set is also decoded by the CTC prefix beam search (``--beam``) with the best epoch's
weights, reported as ``test_per_beam`` (``rnnlab eval`` reports both decodings). Two
baselines ride along in result.json: the blank-only recogniser (PER 100%: every phone
deleted) and the best constant recogniser given the reference length (the training set's most
frequent phone repeated).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnlab.data.speech import FeatureConfig, Utterance, edit_distance, error_rate, log_mel
from rnnlab.device import model_device, to_device
from rnnlab.errors import ConfigError, DataError
from rnnlab.families.base import (
    DecodeRequest,
    Family,
    Problem,
    RecurrentOptions,
    Score,
    TrainOptions,
    default,
    model_config,
    option,
    score_text,
    tail,
)
from rnnlab.models.ctc import CTCRecognizer, beam_decode, greedy_decode

PER = Score("per", "PER", "%")
SYNTH = "espeak-synth"
EVAL_BATCH = 32


@dataclass(frozen=True)
class CTCConfig(TrainOptions, RecurrentOptions):
    """A stack of bidirectional recurrent layers and a softmax over the phones and a blank."""

    family: ClassVar[str] = "ctc"
    data: str = default(TrainOptions, "data", SYNTH)
    cell: str = default(RecurrentOptions, "cell", "lstm")
    hidden_size: int = default(RecurrentOptions, "hidden_size", 128)
    num_layers: int = default(RecurrentOptions, "num_layers", 2)
    dropout: float = default(RecurrentOptions, "dropout", 0.2)
    lr: float = default(TrainOptions, "lr", 1e-3)
    epochs: int = default(TrainOptions, "epochs", 40)
    patience: int = default(TrainOptions, "patience", 8)
    lr_patience: int = default(TrainOptions, "lr_patience", 3)
    clip: float = default(TrainOptions, "clip", 5.0)
    unidirectional: bool = option(
        False,
        "every layer reads forward only (a streaming recogniser); by default each reads "
        "the utterance both ways, as Graves et al.",
    )
    stride: int = option(2, "feature frames stacked into one recurrent step (1: every 10 ms "
                         "frame its own step)", "data", positive=True, high=16)  # fmt: skip
    n_mels: int = option(40, "mel filters of the features (plus the log energy)", "data",
                         positive=True, high=256)  # fmt: skip
    beam: int = option(8, "beam of the test set's prefix beam search (0: greedy only)",
                       "evaluation", low=0, high=1024)  # fmt: skip
    phones: str = option("61", "TIMIT: train on its 61 phones or on the 39 folded classes "
                         "(scored on the 39 either way)", "data", choices=("61", "39"))  # fmt: skip


@dataclass
class SpeechSet:
    """One split as tensors: features (T_i, F) and phone ids (1-based; 0 is the blank)."""

    features: list[Tensor]
    targets: list[Tensor]
    speakers: list[str]


def synth_directory(data: str) -> Path | None:
    from rnnlab.data.polyphonic import user_data_dir

    if data == SYNTH:
        return user_data_dir() / SYNTH
    path = Path(data)
    if path.is_dir() and (path / "manifest.json").is_file() and (path / "corpus.npz").is_file():
        return path
    return None


def is_timit(data: str) -> bool:
    from rnnlab.data.timit import looks_like_timit

    return Path(data).is_dir() and looks_like_timit(Path(data))


def read_utterances(cfg: Any) -> tuple[dict[str, list[Utterance]], list[str], str]:
    """The splits' utterances, the phone inventory trained on, and the corpus kind."""
    directory = synth_directory(cfg.data)
    if directory is not None:
        from rnnlab.data import synth_speech

        if cfg.phones != "61":
            raise ConfigError(f"--phones applies to TIMIT only ({cfg.data} has its own phones)")
        splits, manifest = synth_speech.load(directory)
        return splits, list(manifest["phones"]), "synth"
    if is_timit(cfg.data):
        from rnnlab.data import timit

        fold = cfg.phones == "39"
        root = Path(cfg.data)
        splits = {s: timit.read_timit(root, s) for s in ("train", "valid", "test")}
        if fold:
            splits = {s: [_with_phones(u, timit.fold_39(u.phones)) for u in v]
                      for s, v in splits.items()}  # fmt: skip
        return splits, list(timit.phone_inventory(fold)), "timit"
    raise DataError(
        f"--data {cfg.data}: neither {SYNTH} (made by `rnnlab data make-speech`), a directory "
        "made by it, nor a TIMIT directory (holding TRAIN and TEST)"
    )


def inventory_of(cfg: Any) -> list[str]:
    """The phones a run on ``cfg.data`` trains on, without reading the audio."""
    directory = synth_directory(cfg.data)
    if directory is not None:
        from rnnlab.data.synth_speech import read_manifest

        return [str(p) for p in read_manifest(directory)["phones"]]
    from rnnlab.data import timit

    return list(timit.phone_inventory(cfg.phones == "39"))


def _with_phones(u: Utterance, phones: tuple[str, ...]) -> Utterance:
    return Utterance(u.name, u.speaker, u.audio, u.rate, phones, u.text)


def alignment_steps(targets: Tensor) -> int:
    """Steps a CTC alignment of ``targets`` needs: one per label, and a blank between repeats."""
    return len(targets) + int((targets[1:] == targets[:-1]).sum())


def check_alignable(sets: dict[str, SpeechSet], names: dict[str, list[str]], stride: int,
                    data: str) -> None:  # fmt: skip
    """Refuse, before training, an utterance with fewer steps (frames / stride, rounded up) than
    its labels' alignment needs, naming it and the largest stride that fits every utterance."""
    need = {s: [alignment_steps(t) for t in v.targets] for s, v in sets.items()}
    frames = {s: [len(f) for f in v.features] for s, v in sets.items()}

    def fits(k: int) -> bool:
        return all(-(-n // k) >= m for s in sets for n, m in zip(frames[s], need[s], strict=True))

    if fits(stride):
        return
    split, i = next((s, i) for s in sets for i, (n, m) in enumerate(zip(frames[s], need[s],
                    strict=True)) if -(-n // stride) < m)  # fmt: skip
    n, m = frames[split][i], need[split][i]
    labels = len(sets[split].targets[i])
    best = next((k for k in range(stride - 1, 0, -1) if fits(k)), None)
    advice = (
        f"use --stride {best} or less"
        if best
        else "even one frame a step is too few: the utterance is shorter than its phones"
    )
    raise DataError(
        f"{data}: {split} utterance {names[split][i]} has {n} frames, {-(-n // stride)} steps "
        f"at --stride {stride}, for {labels} phones needing {m}; {advice}"
    )


def check_speakers_disjoint(splits: dict[str, list[Utterance]], data: str) -> None:
    seen: dict[str, str] = {}
    for split, utts in splits.items():
        for u in utts:
            if seen.setdefault(u.speaker, split) != split:
                raise DataError(f"{data}: speaker {u.speaker} is in both {seen[u.speaker]} and "
                                f"{split}: the splits must be speaker-disjoint")  # fmt: skip


class CTCProblem(Problem):
    """Phone recognition with CTC: PER by greedy decoding each epoch, beam decoding at test."""

    model: CTCRecognizer

    def __init__(self, cfg: Any, model: CTCRecognizer, assets: dict[str, Any] | None) -> None:
        self.cfg, self.model = cfg, model
        utterances, inventory, kind = read_utterances(cfg)
        if assets and assets.get("phones") and assets["phones"] != inventory:
            raise DataError(f"{cfg.data}: its phone set differs from the one this run was "
                            "trained on")  # fmt: skip
        check_speakers_disjoint(utterances, cfg.data)
        for split, utts in utterances.items():
            if not utts:
                raise DataError(f"{cfg.data}: the {split} split has no utterances")
        self.inventory, self.kind = inventory, kind
        self.utterance_names = {s: [u.name for u in v] for s, v in utterances.items()}
        index = {p: i + 1 for i, p in enumerate(inventory)}
        features = FeatureConfig(n_mels=cfg.n_mels)
        self.sets = {
            split: SpeechSet(
                [torch.from_numpy(log_mel(u.audio, u.rate, features)) for u in utts],
                [torch.tensor([index[p] for p in u.phones], dtype=torch.int64) for u in utts],
                [u.speaker for u in utts],
            )
            for split, utts in utterances.items()
        }
        check_alignable(self.sets, self.utterance_names, cfg.stride, cfg.data)
        if not assets:  # a new run: the training set's statistics go into the model's buffers
            frames = torch.cat(self.sets["train"].features)
            model.set_normalisation(frames.mean(0), frames.std(0))
        folding = None
        if kind == "timit":
            from rnnlab.data.timit import FOLD_39

            folding = FOLD_39
        self.folding = folding
        counts = Counter(int(p) for t in self.sets["train"].targets for p in t.tolist())
        self.frequent = counts.most_common(1)[0][0]
        self.beam_in_evaluation = True
        self.final_beam: float | None = None

    def assets(self) -> dict[str, Any]:
        return {"phones": self.inventory, "corpus": self.kind,
                "data": {"data": self.cfg.data,
                         **{f"{s}_utterances": len(v.features) for s, v in self.sets.items()},
                         **{f"{s}_speakers": len(set(v.speakers)) for s, v in self.sets.items()},
                         "phones": len(self.inventory)}}  # fmt: skip

    def _batches(self, data: SpeechSet, batch_size: int,
                 generator: torch.Generator | None) -> list[list[int]]:  # fmt: skip
        lengths = torch.tensor([len(f) for f in data.features], dtype=torch.float64)
        if generator is not None:
            lengths = lengths * (0.9 + 0.2 * torch.rand(len(lengths), generator=generator,
                                                        dtype=torch.float64))  # fmt: skip
        order = torch.argsort(lengths, stable=True).tolist()
        groups = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
        if generator is not None:
            groups = [groups[k] for k in torch.randperm(len(groups), generator=generator)]
        return groups

    def _collate(self, data: SpeechSet, group: list[int]) -> dict[str, Tensor]:
        pad = torch.nn.utils.rnn.pad_sequence
        return {
            "x": pad([data.features[i] for i in group], batch_first=True),
            "lengths": torch.tensor([len(data.features[i]) for i in group]),
            "targets": pad([data.targets[i] for i in group], batch_first=True),
            "target_lengths": torch.tensor([len(data.targets[i]) for i in group]),
        }

    def train_batches(self, epoch: int) -> Iterable[dict[str, Tensor]]:
        # While training, evaluations decode greedily (the beam search runs once, in finalise,
        # on the best epoch's weights); `rnnlab eval` never trains, so it gets both.
        self.beam_in_evaluation = False
        generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        data = self.sets["train"]
        for group in self._batches(data, self.cfg.batch_size, generator):
            yield self._collate(data, group)

    def batch_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, float, float]:
        log_probs, steps = self.model(batch["x"], batch["lengths"])
        loss = self.model.ctc_loss(log_probs, steps, batch["targets"], batch["target_lengths"])
        refs = _targets(batch)
        hyps = greedy_decode(log_probs, steps)
        errors = sum(edit_distance(h, r) for h, r in zip(hyps, refs, strict=True))
        return loss / len(refs), 100.0 * errors, float(sum(len(r) for r in refs))

    @torch.no_grad()
    def decode(self, split: str, beam: int = 0) -> tuple[list[list[int]], list[list[int]], float]:
        """(hypotheses, references, summed CTC NLL) of a split, in evaluation mode."""
        was_training = self.model.training
        self.model.eval()
        data, device = self.sets[split], model_device(self.model)
        hyps: list[list[int]] = [[] for _ in data.features]
        refs: list[list[int]] = [t.tolist() for t in data.targets]
        nll = 0.0
        for group in self._batches(data, EVAL_BATCH, None):
            batch = to_device(self._collate(data, group), device)
            log_probs, steps = self.model(batch["x"], batch["lengths"])
            nll += float(self.model.ctc_loss(log_probs, steps, batch["targets"],
                                             batch["target_lengths"]))  # fmt: skip
            decoded = beam_decode(log_probs, steps, beam) if beam else greedy_decode(
                log_probs, steps)  # fmt: skip
            for i, h in zip(group, decoded, strict=True):
                hyps[i] = h
        self.model.train(was_training)
        return hyps, refs, nll

    def named(self, seq: list[int]) -> list[str]:
        return self._scored([seq])[0]

    def _per(self, hyps: list[list[int]], refs: list[list[int]]) -> float:
        return 100.0 * error_rate(self._scored(hyps), self._scored(refs))

    def _scored(self, seqs: list[list[int]]) -> list[list[str]]:
        """Phone names as scored: TIMIT's folded to the 39 classes (q deleted)."""
        names = [[self.inventory[i - 1] for i in s] for s in seqs]
        if self.folding is None:
            return names
        fold = self.folding
        return [[f for p in s if (f := fold[p]) is not None] for s in names]

    def evaluate(self, split: str) -> dict[str, Any]:
        hyps, refs, nll = self.decode(split)
        out: dict[str, Any] = {"score": self._per(hyps, refs),
                               "nll": nll / len(refs)}  # fmt: skip
        if split == "test" and self.cfg.beam and self.beam_in_evaluation:
            beam_hyps, _, _ = self.decode(split, self.cfg.beam)
            out["per_beam"] = self._per(beam_hyps, refs)
        return out

    def finalise(self) -> None:
        if self.cfg.beam:
            hyps, refs, _ = self.decode("test", self.cfg.beam)
            self.final_beam = self._per(hyps, refs)

    def result(self, valid: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
        refs = [t.tolist() for t in self.sets["test"].targets]
        constant = [[self.frequent] * len(r) for r in refs]
        return {
            "valid_per": valid.get("score"),
            "test_per": test.get("score"),
            "test_per_beam": self.final_beam,
            "test_nll_per_utterance": test.get("nll"),
            "baseline_blank_only_per": 100.0,
            "baseline_frequent_phone_per": self._per(constant, refs),
            "frequent_phone": self.inventory[self.frequent - 1],
        }


@torch.no_grad()
def transcribe(model: CTCRecognizer, phones: list[str], path: Path, beam: int) -> list[str]:
    """The phones a recogniser hears in an audio file (mono, or the channels' mean)."""
    from rnnlab.data.timit import read_audio

    audio, rate = read_audio(path)
    n_mels = model.feature_mean.shape[0] - 1
    feats = torch.from_numpy(log_mel(audio, rate, FeatureConfig(n_mels=n_mels)))
    if len(feats) < model.stride:
        raise DataError(f"{path}: {len(audio) / rate:.3f} s is too short to decode")
    x = feats[None].to(model_device(model))
    log_probs, steps = model(x, torch.tensor([len(feats)]))
    best = beam_decode(log_probs, steps, beam) if beam else greedy_decode(log_probs, steps)
    return [phones[i - 1] for i in best[0]]


def _targets(batch: dict[str, Tensor]) -> list[list[int]]:
    return [t[:n].tolist() for t, n in zip(batch["targets"], batch["target_lengths"].tolist(),
                                            strict=True)]  # fmt: skip


class CTCFamily(Family):
    name = "ctc"
    title = "speech: a deep bidirectional recurrent phone recogniser trained with CTC"
    config_type = CTCConfig
    score = PER

    def accepts(self, data: str, options: dict[str, Any]) -> bool:
        return data == SYNTH or synth_directory(data) is not None or is_timit(data)

    def data_help(self) -> str:
        return (f"{SYNTH} (made by `rnnlab data make-speech`), a directory it made, or a TIMIT "
                "directory (the one holding TRAIN and TEST)")  # fmt: skip

    def known_data(self) -> list[str]:
        return [SYNTH]

    def build_model(self, cfg: Any, assets: dict[str, Any]) -> nn.Module:
        phones = assets.get("phones") or inventory_of(cfg)
        mc = model_config(cfg, "ctc", bidirectional=not cfg.unidirectional)
        return CTCRecognizer(mc, FeatureConfig(n_mels=cfg.n_mels).size, len(phones),
                             cfg.stride)  # fmt: skip

    def problem(self, cfg: Any, assets: dict[str, Any] | None = None) -> Problem:
        model = self.build_model(cfg, assets or {})
        return CTCProblem(cfg, model, assets)  # type: ignore[arg-type]

    def decode(self, run: Any, request: DecodeRequest) -> list[str]:
        model, phones = run.model, list(run.assets["phones"])
        if request.audio:
            return [f"{path}: {' '.join(transcribe(model, phones, path, request.beam))}"
                    for path in request.audio]  # fmt: skip
        problem = run.problem()
        hyps, refs, _ = problem.decode(request.split, request.beam)
        names = problem.utterance_names[request.split]
        lines = []
        for i in range(min(request.n, len(refs))):
            ref, hyp = problem.named(refs[i]), problem.named(hyps[i])
            lines += [f"{names[i]} ({edit_distance(hyp, ref)} errors in {len(ref)})",
                      f"  ref: {' '.join(ref)}", f"  hyp: {' '.join(hyp)}"]  # fmt: skip
        per = problem._per(hyps, refs)
        kind = f"beam {request.beam}" if request.beam else "greedy"
        lines.append(f"{request.split}: PER {per:.2f}% over {len(refs)} utterances ({kind})")
        return lines

    def summary(self, result: dict[str, Any], out: Path) -> str:
        beam = result.get("test_per_beam")
        extra = "" if beam is None else f", beam {beam:.2f}%"
        return (f"{result['data']} ctc/{result['cell']}: {score_text(self.score, result)}{extra}"
                f" (frequent-phone baseline {result['baseline_frequent_phone_per']:.1f}%); "
                f"{tail(result, out)}")  # fmt: skip
