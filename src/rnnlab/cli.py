"""The ``rnnlab`` command line: argument parsing only; the work is done by library functions."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import MISSING, fields, replace
from pathlib import Path
from typing import Any

from rnnlab.errors import ConfigError, RnnlabError

_EXIT_ERROR, _EXIT_INTERRUPTED = 2, 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # `rnnlab bench speed ...` hands every option after it to the benchmark's own parser.
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "handler", None) is _bench_speed:
        args.options = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not hasattr(args, "handler"):
        parser.print_help()
        return _EXIT_ERROR
    try:
        return int(args.handler(args) or 0)
    except RnnlabError as exc:
        if args.traceback:
            raise
        print(f"rnnlab: error: {exc}", file=sys.stderr)
        return _EXIT_ERROR
    except KeyboardInterrupt:
        print("rnnlab: interrupted", file=sys.stderr)
        return _EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnlab", description=__doc__)
    parser.add_argument("--traceback", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(title="commands")

    train = sub.add_parser(
        "train", help="train a model into a run directory", argument_default=argparse.SUPPRESS
    )
    _add_config_options(train)
    train.add_argument("--out", type=Path, help="run directory (default: runs/<data>-<cell>-...)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=_train)

    ev = sub.add_parser("eval", help="recompute a run's NLL from its checkpoint")
    ev.add_argument("run", type=Path)
    ev.add_argument("--split", default="test", choices=["train", "valid", "test"])
    ev.add_argument("--data", default=None, help="evaluate on this dataset instead of the run's")
    ev.add_argument(
        "--iw-samples",
        type=int,
        default=0,
        help="sentence VAE: also the importance-weighted NLL with this many samples",
    )
    ev.set_defaults(handler=_eval)

    cmp = sub.add_parser("compare", help="a markdown table of runs (and their learning curves)")
    cmp.add_argument("runs", type=Path, nargs="+")
    cmp.add_argument("--plot", type=Path, default=None, help="write learning curves to this PNG")
    cmp.set_defaults(handler=_compare)

    data = sub.add_parser("data", help="list and describe datasets")
    data_sub = data.add_subparsers(title="data commands")
    data_sub.add_parser("list", help="the bundled datasets").set_defaults(handler=_data_list)
    show = data_sub.add_parser("show", help="pieces, frames, lengths and note density per split")
    show.add_argument("name", help="a bundled set, a .mat/.pickle/.npz path or a long-lag task")
    show.add_argument("--seq-len", type=int, default=0, help="tasks: the sequence length")
    show.add_argument("--delay", type=int, default=0, help="recall task: the lag")
    show.set_defaults(handler=_data_show)

    imp = data_sub.add_parser("import-midi", help="a dataset from a folder of MIDI files")
    imp.add_argument("directory", type=Path, help="searched recursively for .mid/.midi files")
    imp.add_argument("--name", required=True, help="the dataset's name, for --data NAME")
    imp.add_argument("--frames-per-beat", type=int, default=2, help="quantisation (default: 2)")
    imp.add_argument("--transpose", action="store_true", help="move each piece to C major/minor")
    imp.add_argument("--splits", default="0.8,0.1,0.1", help="train,valid,test fractions")
    imp.add_argument("--seed", type=int, default=0, help="seed of the split")
    imp.add_argument("--out-dir", type=Path, default=None, help="default: $RNNLAB_DATA or cache")
    imp.set_defaults(handler=_import_midi)

    smp = sub.add_parser("sample", help="sample a piece from a run: MIDI and/or a piano-roll PNG")
    smp.add_argument("run", type=Path)
    smp.add_argument("--out", type=Path, default=None, help="write a MIDI file here")
    smp.add_argument("--png", type=Path, default=None, help="draw the piano roll here")
    smp.add_argument("--frames", type=int, default=200)
    smp.add_argument("--seed", type=int, default=0)
    smp.add_argument("--frames-per-beat", type=int, default=2, help="for the MIDI file's timing")
    smp.add_argument("--bpm", type=float, default=100.0)
    smp.set_defaults(handler=_sample)

    gen = sub.add_parser(
        "generate", help="sentences from a sentence-VAE run's prior (or a sentence-LM run)"
    )
    gen.add_argument("run", type=Path)
    gen.add_argument("--n", type=int, default=5, help="how many sentences")
    gen.add_argument("--temperature", type=float, default=0.0, help="0: greedy decoding")
    gen.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest words")
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(handler=_generate)
    rec = sub.add_parser("reconstruct", help="encode a sentence and decode it (posterior mean)")
    rec.add_argument("run", type=Path)
    rec.add_argument("sentence")
    rec.set_defaults(handler=_reconstruct)
    inter = sub.add_parser("interpolate", help="decode points between two sentences' codes")
    inter.add_argument("run", type=Path)
    inter.add_argument("first")
    inter.add_argument("second")
    inter.add_argument("--steps", type=int, default=8)
    inter.set_defaults(handler=_interpolate)

    study = sub.add_parser(
        "study", help="hyperparameter studies on Optuna (Greff et al.'s protocol)"
    )
    study_sub = study.add_subparsers(title="study commands")
    for command, text in (("create", "a new study from a search space"),
                          ("run", "a worker: pull and run trials until the study is done"),
                          ("status", "trial counts by state and the best trial"),
                          ("report", "HTML page and markdown summary")):  # fmt: skip
        p = study_sub.add_parser(command, help=text)
        p.add_argument("name")
        p.add_argument("--storage", default=None, help="database URL (default: SQLite in --dir)")
        p.add_argument("--dir", type=Path, default=Path("studies"), help="studies' directory")
        p.set_defaults(handler=_study, command=command)
        if command == "create":
            p.add_argument("--space", default="greff", help="greff (the preset) or a JSON file")
            p.add_argument("--trials", type=int, required=True, help="trials in all, all workers")
            p.add_argument("--sampler", default="random", help="random (Greff) or tpe")
            p.add_argument("--pruner", default="none", help="none or median")
            p.add_argument("--seed", type=int, default=0)
            p.add_argument(
                "--stratify",
                default=None,
                help="a categorical parameter (cell) to spread the trials evenly over",
            )
        elif command == "run":
            p.add_argument(
                "--worker", type=int, default=0, help="this worker's sampler seed offset"
            )
            p.add_argument("--max-trials", type=int, default=None, help="stop this worker after N")
        elif command == "report":
            p.add_argument("--out", type=Path, default=None, help="default: DIR/NAME")

    cells = sub.add_parser("cells", help="list the registered cells")
    cells.set_defaults(handler=lambda args: print("\n".join(_cell_names())))

    bench = sub.add_parser("bench", help="benchmarks (they measure; they assert nothing)")
    bench_sub = bench.add_subparsers(title="benchmarks")
    speed = bench_sub.add_parser(
        "speed", help="every cell against torch.nn: time, memory, matmul floor", add_help=False
    )
    speed.set_defaults(handler=_bench_speed, options=[])
    return parser


def _bench_speed(args: argparse.Namespace) -> None:
    from rnnlab.benchmarks.speed import main as speed_main

    speed_main(args.options, prog="rnnlab bench speed")


# --- train ---------------------------------------------------------------------------------------
def _config_fields() -> list[tuple[str, Any]]:
    from rnnlab.models.rnn import ModelConfig
    from rnnlab.train.config import TrainConfig

    return [("model", f) for f in fields(ModelConfig)] + [("train", f) for f in fields(TrainConfig)]


_MODEL_HELP = {
    "model": "rnn, rnn-nade (an RNN with a NADE output) or vrnn (Chung et al. 2015)",
    "output": "the distribution of a frame: bernoulli, nade, gaussian or gmm",
    "mixtures": "components of the gmm output",
    "z_size": "VRNN: latent units per step",
    "feature_size": "VRNN: units of its feature, prior, encoder and decoder nets (0: hidden)",
    "embedding_size": "LM: word embedding units (0: hidden size)",
    "tied": "LM: tie the output layer to the embedding (Press & Wolf 2017)",
    "variational": "LM: one dropout mask per sequence (Gal & Ghahramani 2016)",
    "embedding_dropout": "LM: drop whole words from the embedding",
    "weight_drop": "LM: DropConnect on the recurrent weights (Merity et al. 2017)",
    "init": "LM: every weight uniform in [-init, init] (0: each module's own)",
    "word_dropout": "sentence VAE: decoder inputs replaced by <unk> in training",
    "latent_every_step": "sentence VAE: z joins every decoder input, not only the first state",
    "nade_size": "hidden units of the NADE output",
    "cell": "recurrent cell (see `rnnlab cells`)",
    "frame_size": "units per frame (88 piano keys)",
    "hidden_size": "units per layer",
    "num_layers": "stacked recurrent layers",
    "dropout": "dropout between layers and before the output",
    "layer_norm": "layer normalisation (Ba et al. 2016)",
    "forget_bias": "initial forget-gate bias (LSTM family)",
    "recurrent_dropout": "variational recurrent dropout (Gal & Ghahramani 2016)",
    "zoneout": "zoneout probability (Krueger et al. 2017)",
    "backend": "auto (fused where it applies), step (the reference loop) or fused",
    "chrono": "chrono initialisation with this T_max (Tallec & Ollivier 2018; 0: off)",
}


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per config field: the dataclasses are the single source of truth."""
    for _group, f in _config_fields():
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        help_text = f.metadata.get("help") or _MODEL_HELP.get(f.name, "")
        help_text = f"{help_text} (default: {default})"
        if f.type in (bool, "bool"):
            parser.add_argument(flag, action="store_true", dest=f.name, help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}[str(f.type)]
            parser.add_argument(flag, type=kind, dest=f.name, help=help_text)


def _train(args: argparse.Namespace) -> int:
    from rnnlab.data.tasks import is_task
    from rnnlab.models.rnn import ModelConfig
    from rnnlab.train.config import RunConfig, TrainConfig
    from rnnlab.train.loop import train_run
    from rnnlab.train.tasks import resolve_task_config, with_task_defaults

    given = {group: {} for group in ("model", "train")}  # type: dict[str, dict[str, Any]]
    for group, f in _config_fields():
        if hasattr(args, f.name):
            given[group][f.name] = getattr(args, f.name)
    progress = not getattr(args, "no_progress", False)
    if getattr(args, "resume", False):
        if not hasattr(args, "out"):
            raise ConfigError("--resume needs --out RUN, the run directory to continue")
        other = sorted(set(given["model"]) | set(given["train"]) - {"epochs"})
        if other:
            raise ConfigError(
                f"--resume continues a run with its own config.json; only --epochs may change "
                f"(got {', '.join('--' + k.replace('_', '-') for k in other)})"
            )
        result = train_run(
            args.out, None, resume=True, epochs=given["train"].get("epochs"), progress=progress
        )
        out = args.out
    else:
        train_cfg = TrainConfig(**given["train"])
        if is_task(train_cfg.data):
            model_cfg = resolve_task_config(given["model"], train_cfg)
            train_cfg = with_task_defaults(train_cfg)
        else:
            model_cfg = ModelConfig(**given["model"])
        cfg = RunConfig(model_cfg, train_cfg)
        out = getattr(args, "out", None) or _default_out(cfg)
        print(
            f"training {cfg.model.cell} (H={cfg.model.hidden_size}) on {cfg.train.data} into {out}"
        )
        try:
            result = train_run(out, cfg, progress=progress)
        except KeyboardInterrupt:
            print(f"interrupted; continue with: rnnlab train --out {out} --resume", file=sys.stderr)
            raise
    if "task" in result:
        print(_task_summary(result, out))
        return 0
    if "test_ppl" in result or "test_bpc" in result:
        key = "ppl" if "test_ppl" in result else "bpc"
        print(
            f"{result['data']} lm/{result['cell']}: test {key} {result['test_' + key]:.3f} "
            f"(NLL {result['test_nll']:.4f} nats/token; valid {key} {result['valid_' + key]:.3f}) "
            f"at the best validation epoch {result['best_epoch']}; {result['num_params']:,} "
            f"parameters, {result['wall_time_s']:.0f} s; run: {out}"
        )
        return 0
    if "test_mutual_info" in result:
        iw = result.get("test_iw_nll")
        iw_text = (
            "n/a"
            if iw is None
            else (
                f"{iw:.2f} nats/sentence (k={result['iw_samples']}, "
                f"ppl {result['test_iw_ppl']:.1f})"
            )
        )
        print(
            f"{result['data']} {result.get('model', 'sentence-vae')}/{result['cell']}: "
            "test negative ELBO "
            f"{result['test_neg_elbo']:.2f} nats/sentence (a bound), importance-weighted test NLL "
            f"{iw_text}; KL {result['test_kl']:.2f}, active units {result['test_active_units']}, "
            f"MI {result['test_mutual_info']:.2f}; {result['num_params']:,} parameters, "
            f"{result['wall_time_s']:.0f} s; run: {out}"
        )
        return 0
    if "test_neg_elbo" in result:
        iw = result.get("test_iw_nll")
        iw_text = "n/a" if iw is None else f"{iw:.4f} (k={result['iw_samples']})"
        print(
            f"{result['data']} vrnn/{result['cell']}: test negative ELBO "
            f"{result['test_neg_elbo']:.4f} nats/frame (a bound), importance-weighted test NLL "
            f"{iw_text}, at the best "
            f"validation epoch {result['best_epoch']}; {result['num_params']:,} parameters, "
            f"{result['wall_time_s']:.0f} s; run: {out}"
        )
        return 0
    print(
        f"{result['data']} {result['cell']}: test NLL {result['test_nll']:.4f} nats/frame at the "
        f"best validation epoch {result['best_epoch']} (valid {result['valid_nll']:.4f}); "
        f"{result['num_params']:,} parameters, {result['wall_time_s']:.0f} s; run: {out}"
    )
    return 0


def _task_summary(result: dict[str, Any], out: Any) -> str:
    """The model's test figures beside the trivial predictor's, and the solved flag."""
    trivial = result["trivial"]
    metric = next(k for k in trivial if k not in ("loss", "predictor"))
    loss = "n/a" if trivial["loss"] is None else f"{trivial['loss']:.4g}"
    test_loss = result["test_loss"]
    test_loss = "n/a" if test_loss is None else f"{test_loss:.4g}"
    return (
        f"{result['data']} (T={result['task'].get('seq_len')}) {result['cell']}: test loss "
        f"{test_loss}, {metric} {result.get('test_' + metric)}, wrong "
        f"{result.get('test_wrong')}/{result.get('test_count')}; trivial predictor "
        f"({trivial['predictor']}): loss {loss}, {metric} {trivial[metric]:.4g}; "
        f"solved: {'yes' if result['solved'] else 'no'} ({result['stopped']}, epoch "
        f"{result['best_epoch']}); {result['num_params']:,} parameters, "
        f"{result['wall_time_s']:.0f} s; run: {out}"
    )


def _default_out(cfg: Any) -> Path:
    data = Path(cfg.train.data).stem if "." in cfg.train.data else cfg.train.data
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return (
        Path("runs") / f"{data}-{cfg.model.cell}-h{cfg.model.hidden_size}-s{cfg.train.seed}-{stamp}"
    )


# --- eval, compare, data --------------------------------------------------------------------------
def _eval(args: argparse.Namespace) -> int:
    from rnnlab.data.tasks import is_task
    from rnnlab.train.loop import load_run, load_sequences
    from rnnlab.train.metrics import evaluate_nll

    cfg, model, meta = load_run(args.run)
    data = args.data or cfg.train.data
    if cfg.train.data != data and (is_task(data) or is_task(cfg.train.data)):
        raise ConfigError(f"a run on {cfg.train.data!r} cannot be evaluated on {data!r}")
    if cfg.model.model == "lm":
        from rnnlab.train.text import TextProblem

        text = TextProblem(replace(cfg, train=replace(cfg.train, data=data)))
        text.model = model
        figures = text.evaluate(args.split)
        key = "bpc" if "bpc" in figures else "ppl"
        print(
            f"{data} {args.split}: {key} {figures[key]:.3f}, NLL {figures['score']:.4f} nats/token "
            f"over {figures['tokens']} tokens (checkpoint of epoch {meta.get('epoch')})"
        )
        return 0
    if args.iw_samples < 0:
        raise ConfigError(
            f"--iw-samples must be 0 (off) or a number of samples, got {args.iw_samples}"
        )
    if args.iw_samples and cfg.model.model not in ("sentence-vae", "sentence-lm"):
        raise ConfigError(
            f"--iw-samples applies to sentence-vae runs, not {cfg.model.model!r} ones"
        )
    if cfg.model.model in ("sentence-vae", "sentence-lm"):
        from rnnlab.train.sentence_vae import SentenceVAEProblem

        vae = SentenceVAEProblem(replace(cfg, train=replace(cfg.train, data=data)))
        vae.model = model
        figures = vae.evaluate(args.split)
        print(
            f"{data} {args.split}: negative ELBO {figures['score']:.2f} nats/sentence (one "
            f"posterior sample), KL {figures['kl']:.2f}, active units {figures['active_units']}, "
            f"MI {figures['mutual_info']:.2f} (checkpoint of epoch {meta.get('epoch')})"
        )
        if args.iw_samples:
            iw = vae.iw_nll(args.split, args.iw_samples)
            print(
                f"{data} {args.split}: importance-weighted NLL {iw[args.split + '_iw_nll']:.2f} "
                f"nats/sentence, ppl {iw[args.split + '_iw_ppl']:.2f} (k={iw['iw_samples']})"
            )
        return 0
    if cfg.model.model == "vrnn":
        from rnnlab.train.latent import VRNNProblem

        vrnn = VRNNProblem(replace(cfg, train=replace(cfg.train, data=data)))
        vrnn.model = model
        summary = vrnn.evaluate(args.split)
        print(
            f"{data} {args.split}: negative ELBO {summary['score']:.4f} nats/frame (a bound; one "
            f"posterior sample per piece), KL {summary['kl_per_frame']:.4f} per frame "
            f"(checkpoint of epoch {meta.get('epoch')})"
        )
        return 0
    if is_task(data):
        from rnnlab.train.tasks import TaskProblem

        if args.split == "train":
            raise ConfigError("long-lag tasks draw fresh training sequences; use valid or test")
        problem = TaskProblem(cfg)
        problem.model = model
        summary = problem.evaluate(args.split)
        listed = ", ".join(f"{k} {v}" for k, v in summary.items())
        print(f"{data} {args.split}: {listed} (checkpoint of epoch {meta.get('epoch')})")
        return 0
    result = evaluate_nll(model, load_sequences(data)[args.split])
    print(
        f"{data} {args.split}: NLL {result.nll:.4f} nats/frame over {result.frames} frames "
        f"(checkpoint of epoch {meta.get('epoch')})"
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    from rnnlab.report import compare_table, plot_curves

    print(compare_table(args.runs))
    if args.plot:
        plot_curves(args.runs, args.plot)
        print(f"learning curves: {args.plot}")
    return 0


def _data_list(args: argparse.Namespace) -> int:
    from rnnlab.data import BUNDLED
    from rnnlab.data.tasks import TASKS

    print("| name | dataset |\n| --- | --- |")
    for name, info in BUNDLED.items():
        print(f"| {name} | {info.title} |")
    for name, task in TASKS.items():
        print(f"| {name} | long-lag task: {task.reference} |")
    return 0


def _data_show(args: argparse.Namespace) -> int:
    from rnnlab.data import load_polyphonic
    from rnnlab.data.tasks import is_task

    if is_task(args.name):
        return _task_show(args)
    rolls = load_polyphonic(args.name)
    print(f"{rolls.name} ({rolls.source})")
    print("| split | pieces | frames | min len | mean len | max len | notes/frame |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for split, s in rolls.stats().items():
        print(
            f"| {split} | {s['pieces']} | {s['frames']} | {s['min_length']} | "
            f"{s['mean_length']:.1f} | {s['max_length']} | {s['notes_per_frame']:.2f} |"
        )
    return 0


def _import_midi(args: argparse.Namespace) -> int:
    from rnnlab.data.midi import import_midi_dir, user_data_dir
    from rnnlab.data.polyphonic import BUNDLED, save_npz

    if args.name in BUNDLED or "/" in args.name or not args.name:
        raise ConfigError(f"--name {args.name!r}: choose a plain name other than a bundled set's")
    try:
        fractions = [float(v) for v in args.splits.split(",")]
    except ValueError:
        fractions = []
    if len(fractions) != 3:
        raise ConfigError(f"--splits takes three fractions like 0.8,0.1,0.1, got {args.splits!r}")
    splits = (fractions[0], fractions[1], fractions[2])
    rolls, skipped = import_midi_dir(
        args.directory, args.name, args.frames_per_beat, args.transpose, splits, args.seed
    )
    for line in skipped:
        print(f"rnnlab: warning: {line}", file=sys.stderr)
    out_dir = args.out_dir or user_data_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{args.name}.npz"
    save_npz(rolls, path)
    sizes = ", ".join(f"{k} {len(v)}" for k, v in rolls.splits.items())
    print(f"{args.name}: {sizes} pieces ({len(skipped)} skipped) -> {path}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    import torch

    from rnnlab.data.midi import plot_roll, write_midi
    from rnnlab.data.tasks import is_task
    from rnnlab.train.loop import load_run

    if args.out is None and args.png is None:
        raise ConfigError("sample needs --out piece.mid, --png roll.png, or both")
    if args.frames < 1:
        raise ConfigError(f"--frames must be positive, got {args.frames}")
    cfg, model, meta = load_run(args.run)
    if is_task(cfg.train.data):
        raise ConfigError(f"{args.run} is a {cfg.train.data!r} task run; sampling is for music")
    generator = torch.Generator().manual_seed(args.seed)
    roll = model.sample(args.frames, batch_size=1, generator=generator)[0].numpy().astype(bool)
    if args.out is not None:
        write_midi(roll, args.out, args.frames_per_beat, args.bpm)
        print(f"MIDI: {args.out} ({args.frames} frames, {roll.sum(1).mean():.1f} notes a frame)")
    if args.png is not None:
        title = f"{cfg.model.cell} on {cfg.train.data}, epoch {meta.get('epoch')}, seed {args.seed}"
        plot_roll(roll, args.png, title)
        print(f"piano roll: {args.png}")
    return 0


def _load_sentence_vae(run: Path, latent: bool = True) -> tuple[Any, list[str]]:
    """The model of a sentence-vae run (or, when ``latent`` is False, of a sentence-lm run too)."""
    from rnnlab.train.loop import load_run

    cfg, model, _ = load_run(run)
    kinds = ("sentence-vae",) if latent else ("sentence-vae", "sentence-lm")
    if cfg.model.model not in kinds:
        raise ConfigError(f"{run} is a {cfg.model.model!r} run, not a {' or '.join(kinds)} one")
    from rnnlab.data.text import sentence_vocab
    from rnnlab.train.text import load_corpus

    corpus, _ = load_corpus(cfg.train.data, cfg.train.data_dir)
    return model, sentence_vocab(corpus)


def _words(ids: list[int], vocab: list[str]) -> str:
    return " ".join(vocab[i] for i in ids)


def _encode(model: Any, text: str, vocab: list[str]) -> Any:
    import torch

    from rnnlab.data.text import encode_sentence

    ids, unknown = encode_sentence(text, vocab)
    if unknown:
        print(f"rnnlab: note: {unknown} word(s) of {text!r} are not in the vocabulary: <unk>")
    mean, _ = model.encode(ids[None], torch.tensor([len(ids)]))
    return mean


def _generate(args: argparse.Namespace) -> int:
    import torch

    model, vocab = _load_sentence_vae(args.run, latent=False)
    gen = torch.Generator().manual_seed(args.seed)
    z = torch.randn(args.n, model.z_size, generator=gen)
    for ids in model.generate(z, temperature=args.temperature, top_k=args.top_k, generator=gen):
        print(_words(ids, vocab))
    return 0


def _reconstruct(args: argparse.Namespace) -> int:
    model, vocab = _load_sentence_vae(args.run)
    mean = _encode(model, args.sentence, vocab)
    print(_words(model.generate(mean)[0], vocab))
    return 0


def _interpolate(args: argparse.Namespace) -> int:
    import torch

    if args.steps < 2:
        raise ConfigError(f"--steps must be at least 2, got {args.steps}")
    model, vocab = _load_sentence_vae(args.run)
    a, b = _encode(model, args.first, vocab), _encode(model, args.second, vocab)
    weights = torch.linspace(0, 1, args.steps)[:, None]
    for w, ids in zip(weights, model.generate((1 - weights) * a + weights * b), strict=True):
        print(f"{float(w):.2f}  {_words(ids, vocab)}")
    return 0


def _study(args: argparse.Namespace) -> int:
    import json

    from rnnlab.study import runner

    storage = args.storage or runner.default_storage(args.dir, args.name)
    if args.command == "create":
        from rnnlab.study.space import load_space

        space = load_space(args.space)
        runner.create_study(args.name, space, storage, args.dir, args.trials, args.sampler,
                            args.pruner, args.seed, args.stratify)  # fmt: skip
        print(f"study {args.name}: {args.trials} trials over {', '.join(space['params'])}; "
              f"storage {storage}; run workers with: rnnlab study run {args.name}"
              + (f" --storage {args.storage}" if args.storage else ""))  # fmt: skip
    elif args.command == "run":
        ran = runner.run_worker(args.name, storage, args.worker, args.max_trials)
        print(f"worker {args.worker}: {ran} trial(s) run")
    elif args.command == "status":
        print(json.dumps(runner.status(args.name, storage), indent=2))
    else:
        from rnnlab.study.report import write_report

        page, md = write_report(args.name, storage, args.out or args.dir / args.name)
        print(f"report: {page} and {md}")
    return 0


def _task_show(args: argparse.Namespace) -> int:
    import torch

    from rnnlab.data.tasks import make_task

    task = make_task(args.name, args.seq_len, args.delay)
    base = task.baseline()
    print(f"{task.name}: {task.reference}")
    print(" ".join((type(task).__doc__ or "").split()))
    print("| property | value |\n| --- | --- |")
    data = task.generate(3, torch.Generator().manual_seed(0))
    rows = {
        **task.describe(),
        "input size": task.input_size,
        "output size": task.output_size,
        "example lengths": data.lengths.tolist(),
        "metric": task.metric_name,
        "trivial predictor": base.how,
        "trivial loss": "n/a" if base.loss is None else f"{base.loss:.6g}",
        f"trivial {task.metric_name}": f"{base.metric:.6g}",
    }
    for key, value in rows.items():
        print(f"| {key} | {value} |")
    return 0


def _cell_names() -> list[str]:
    from rnnlab.cells import cell_names

    return cell_names()


if __name__ == "__main__":
    sys.exit(main())
