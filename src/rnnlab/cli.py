"""The ``rnnlab`` command line: argument parsing only; the work is done by library functions.

``rnnlab train`` builds its options from the chosen family's config (``rnnlab.families``):
``rnnlab train --model X --help`` lists X's options with X's defaults, and an option X has no
field for is refused with the families that do take it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from rnnlab.errors import ConfigError, RnnlabError

_EXIT_ERROR, _EXIT_INTERRUPTED, _EXIT_TERMINATED = 2, 130, 143


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that it stops as Ctrl-C does: a new run that
    has not finished an epoch removes its files, a checkpointed one stays resumable."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    traceback = "--traceback" in argv[: _command_index(argv) + 1]
    try:
        if _command_index(argv) < len(argv) and argv[_command_index(argv)] == "train":
            rest = [a for a in argv[_command_index(argv) + 1 :]]
            return _train(rest)
        return _dispatch(argv)
    except RnnlabError as exc:
        if traceback:
            raise
        print(f"rnnlab: error: {exc}", file=sys.stderr)
        return _EXIT_ERROR
    except OSError as exc:  # a file or folder the system refuses: it names the path and why
        if traceback:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"rnnlab: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return _EXIT_ERROR
    except _Terminated:
        print("rnnlab: terminated", file=sys.stderr)
        return _EXIT_TERMINATED
    except KeyboardInterrupt:
        print("rnnlab: interrupted", file=sys.stderr)
        return _EXIT_INTERRUPTED


def _command_index(argv: list[str]) -> int:
    """Where the command is: after the global options (only --traceback)."""
    k = 0
    while k < len(argv) and argv[k] == "--traceback":
        k += 1
    return k


def _dispatch(argv: list[str]) -> int:
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
    if hasattr(args, "threads"):
        _use_system(args)
    return int(args.handler(args) or 0)


def finite_float(text: str) -> float:
    """An argparse type: a float that is a number (no nan or inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnlab", description=__doc__)
    parser.add_argument("--traceback", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(title="commands")

    sub.add_parser(
        "train",
        help="train a model into a run directory (`rnnlab train --model X --help`: X's options)",
    )

    ev = sub.add_parser("eval", help="recompute a run's score from its checkpoint")
    ev.add_argument("run", type=Path)
    ev.add_argument("--split", default="test", choices=["train", "valid", "test"])
    ev.add_argument("--data", default=None, help="evaluate on this dataset instead of the run's")
    ev.add_argument("--iw-samples", type=int, default=0,
                    help="latent models: also the importance-weighted NLL with this many "
                    "samples")  # fmt: skip
    _add_system(ev)
    ev.set_defaults(handler=_eval)

    cmp = sub.add_parser("compare", help="a markdown table of runs (and their learning curves)")
    cmp.add_argument("runs", type=Path, nargs="+")
    cmp.add_argument("--plot", type=Path, default=None,
                     help="write learning curves to this PNG (a panel per score unit)")  # fmt: skip
    cmp.set_defaults(handler=_compare)

    up = sub.add_parser("upgrade", help="rewrite run directories of an older rnnlab")
    up.add_argument("runs", type=Path, nargs="+")
    up.set_defaults(handler=_upgrade)

    models = sub.add_parser("models", help="the model families (`rnnlab train --model NAME`)")
    models.set_defaults(handler=_models)

    data = sub.add_parser("data", help="list and describe datasets")
    data_sub = data.add_subparsers(title="data commands")
    data_sub.add_parser("list", help="the bundled datasets").set_defaults(handler=_data_list)
    show = data_sub.add_parser("show", help="pieces, frames, lengths and note density per split")
    show.add_argument("name", help="a bundled set, a .mat/.pickle/.npz path or a long-lag task")
    show.add_argument("--seq-len", type=int, default=0, help="tasks: the sequence length")
    show.add_argument("--delay", type=int, default=0, help="recall task: the lag")
    show.add_argument("--columns", default="", help="a CSV's value columns (comma-separated)")
    show.add_argument("--id-column", default="", help="a CSV's sequence id column")
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

    mk = data_sub.add_parser("make-speech", help="synthesise the espeak-synth speech corpus "
                             "(espeak-ng, PTB sentences) into the data cache")  # fmt: skip
    mk.add_argument("--utterances", type=int, default=2400, help="sentences spoken (default 2400)")
    mk.add_argument("--seed", type=int, default=0, help="seed of every draw (default 0)")
    mk.add_argument("--out-dir", type=Path, default=None,
                    help="default: $RNNLAB_DATA/espeak-synth or the cache's")  # fmt: skip
    mk.add_argument("--data-dir", type=Path, default=None,
                    help="where PTB's ptb.train.txt is (default: rnnlab's PTB lookup)")  # fmt: skip
    mk.set_defaults(handler=_make_speech)

    smp = sub.add_parser("sample", help="draw from a run: music as MIDI and a piano roll, a "
                         "series' forecast as CSV and a plot")  # fmt: skip
    smp.add_argument("run", type=Path)
    smp.add_argument("--out", type=Path, default=None, help="a MIDI file (music) or CSV (series)")
    smp.add_argument("--png", type=Path, default=None, help="a piano roll or a forecast plot")
    smp.add_argument("--frames", type=int, default=None,
                     help="frames to draw (music: 200) or the forecast horizon (series: the "
                     "run's)")  # fmt: skip
    smp.add_argument("--seed", type=int, default=0)
    smp.add_argument("--frames-per-beat", type=int, default=2, help="for the MIDI file's timing")
    smp.add_argument("--bpm", type=finite_float, default=100.0)
    _add_system(smp)
    smp.set_defaults(handler=_sample)

    gen = sub.add_parser("generate", help="text from a language model or a sentence model")
    gen.add_argument("run", type=Path)
    gen.add_argument("--n", type=int, default=5, help="how many sentences (lines)")
    gen.add_argument("--temperature", type=finite_float, default=0.0, help="0: greedy decoding")
    gen.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens")
    gen.add_argument("--max-len", type=int, default=50, help="tokens at most per line")
    gen.add_argument("--seed", type=int, default=0)
    _add_system(gen)
    gen.set_defaults(handler=_generate)
    dec = sub.add_parser("decode", help="phones from a recogniser: of audio files, or of a "
                         "split's utterances beside their references")  # fmt: skip
    dec.add_argument("run", type=Path)
    dec.add_argument("audio", type=Path, nargs="*", help="WAV files (16-bit mono PCM) or TIMIT's "
                     "SPHERE .WAV files; none: --n utterances of --split")  # fmt: skip
    dec.add_argument("--split", default="test", choices=("train", "valid", "test"))
    dec.add_argument("--n", type=int, default=5, help="utterances of the split (default 5)")
    dec.add_argument("--beam", type=int, default=8, help="prefix beam search width (0: greedy)")
    _add_system(dec)
    dec.set_defaults(handler=_decode)
    rec = sub.add_parser("reconstruct", help="encode a sentence and decode it (posterior mean)")
    rec.add_argument("run", type=Path)
    rec.add_argument("sentence")
    _add_system(rec)
    rec.set_defaults(handler=_reconstruct)
    inter = sub.add_parser("interpolate", help="decode points between two sentences' codes")
    inter.add_argument("run", type=Path)
    inter.add_argument("first")
    inter.add_argument("second")
    inter.add_argument("--steps", type=int, default=8)
    _add_system(inter)
    inter.set_defaults(handler=_interpolate)

    study = sub.add_parser("study", help="hyperparameter studies on Optuna (any model family)")
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
            _add_system(p, device=None)
        elif command == "report":
            p.add_argument("--out", type=Path, default=None, help="default: DIR/NAME")

    cells = sub.add_parser("cells", help="list the registered cells")
    cells.add_argument(
        "--details",
        action="store_true",
        help="each cell's layer options, backend and own arguments (--cell-args)",
    )
    cells.set_defaults(handler=_cells)

    bench = sub.add_parser("bench", help="benchmarks (they measure; they assert nothing)")
    bench_sub = bench.add_subparsers(title="benchmarks")
    speed = bench_sub.add_parser(
        "speed", help="every cell against torch.nn: time, memory, matmul floor", add_help=False
    )
    speed.set_defaults(handler=_bench_speed, options=[])
    return parser


def _cells(args: argparse.Namespace) -> None:
    if not args.details:
        print("\n".join(_cell_names()))
        return
    from rnnlab.cells import probe_cell

    for name in _cell_names():
        cell = probe_cell(name)
        taken = ", ".join(sorted(cell.options_taken)) or "none"
        kernel = "fused CPU kernel" if cell.fused_kernel else "step loop"
        print(f"{name}: layer options {taken}; {kernel}"
              + ("; surrogate gradient" if not cell.exact_gradient else ""))  # fmt: skip
        for arg, (default, about) in cell.arguments.items():
            print(f"    {arg}={default}  {about}")
        if cell.tally_names:
            print(f"    reports: {', '.join(cell.tally_names)}")


def _add_system(parser: argparse.ArgumentParser, device: str | None = "auto") -> None:
    """--threads and --device, on every command that runs a model (``device`` None: where the
    study's space says, else auto)."""
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default)")  # fmt: skip
    default = "the space's, else auto" if device is None else device
    parser.add_argument("--device", default=device,
                        help="where the model runs: cpu, cuda (or cuda:N), or auto (a GPU where "
                        f"torch sees one); default: {default}")  # fmt: skip


def _use_system(args: argparse.Namespace) -> None:
    """Apply --threads (a busy machine evaluates faster on fewer) and check --device before any
    work starts."""
    if not 0 <= args.threads <= 1024:
        raise ConfigError(
            f"--threads must be in [0, 1024] (0: torch's default), got {args.threads}"
        )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if getattr(args, "device", None) is not None:
        from rnnlab.device import resolve_device

        resolve_device(args.device)


def _bench_speed(args: argparse.Namespace) -> None:
    from rnnlab.benchmarks.speed import main as speed_main

    speed_main(args.options, prog="rnnlab bench speed")


# --- train ---------------------------------------------------------------------------------------
class _OneLineParser(argparse.ArgumentParser):
    """A bad value is one line (``rnnlab: error: ...``), not the whole usage block."""

    def error(self, message: str) -> Any:
        raise ConfigError(f"{message} (`rnnlab train --help` lists the options)")


def train_parser(family: Any) -> argparse.ArgumentParser:
    """``rnnlab train``'s options for one family: its config's fields, grouped, its defaults."""
    from rnnlab.families import FAMILIES
    from rnnlab.families.base import GROUPS, choices_of, field_type

    listing = "\n".join(f"  {f.name:13} {f.title}" for f in FAMILIES.values())
    parser = _OneLineParser(
        prog="rnnlab train",
        description=f"Train a {family.name} model ({family.title}); selected by "
        f"{family.score.label} ({family.score.unit}) on the validation set.",
        epilog=f"model families (--model NAME; `rnnlab train --model NAME --help`):\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--model", help=f"the model family (default: the one --data implies, "
                        f"else rnn); this is {family.name}")  # fmt: skip
    groups = {g: parser.add_argument_group(f"{g} options") for g in GROUPS}
    for f in fields(family.config_type):
        flag = "--" + f.name.replace("_", "-")
        kind = field_type(f)
        names = choices_of(f)
        extra = f"; one of {', '.join(names)}" if names and len(names) <= 16 else ""
        help_text = f"{f.metadata.get('help', '')}{extra} (default: {f.default!r})"
        group = groups[f.metadata.get("group", "model")]
        if kind is bool:
            group.add_argument(flag, action="store_true", dest=f.name, help=help_text)
        else:
            convert = finite_float if kind is float else kind
            group.add_argument(flag, type=convert, dest=f.name, help=help_text)
    run = groups["system"]
    run.add_argument("--out", type=Path, help="run directory (default: runs/<data>-<model>-...)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _family_for_train(argv: list[str]) -> Any:
    """The family whose options parse this command line (see rnnlab.families.choose_family);
    for --resume, the run directory's own."""
    from rnnlab.families import choose_family

    pre = argparse.ArgumentParser(add_help=False)
    for flag in ("--model", "--data", "--data-dir", "--out"):
        pre.add_argument(flag)
    pre.add_argument("--resume", action="store_true")
    known, _ = pre.parse_known_args(argv)
    if known.resume and known.out and known.model is None:
        from rnnlab.train.rundir import read_run_config

        return read_run_config(Path(known.out))[0]
    given = {k: v for k, v in vars(known).items() if v is not None}
    return choose_family(known.model, given)


def _refuse_unknown(extra: list[str], family: Any) -> None:
    """An option of another family (or of none) named, with who takes it."""
    import difflib

    from rnnlab.families import FAMILIES

    flag = next((a.split("=")[0] for a in extra if a.startswith("-")), extra[0])
    name = flag.lstrip("-").replace("-", "_")
    owners = [f.name for f in FAMILIES.values() if name in {x.name for x in fields(f.config_type)}]
    if owners:
        raise ConfigError(
            f"{flag} is not an option of the {family.name} model (it is one of "
            f"{', '.join(owners)}); `rnnlab train --model {family.name} --help` lists its options"
        )
    own = ["--" + f.name.replace("_", "-") for f in fields(family.config_type)]
    close = difflib.get_close_matches(flag, own, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ConfigError(f"unrecognised argument {flag!r}{hint} (`rnnlab train --help`)")


def parse_train(argv: list[str]) -> tuple[Any, argparse.Namespace, dict[str, Any]]:
    """The family, the parsed arguments and the options given, of a `rnnlab train` line."""
    family = _family_for_train(argv)
    parser = train_parser(family)
    args, extra = parser.parse_known_args(argv)
    if extra:
        _refuse_unknown(extra, family)
    given = {f.name: getattr(args, f.name) for f in fields(family.config_type)
             if hasattr(args, f.name)}  # fmt: skip
    return family, args, given


def _train(argv: list[str]) -> int:
    from rnnlab.families import make_config
    from rnnlab.train.loop import train_run

    family, args, given = parse_train(argv)
    progress = not getattr(args, "no_progress", False)
    resume = getattr(args, "resume", False)
    system: dict[str, Any] | None = None
    if resume:
        if not hasattr(args, "out"):
            raise ConfigError("--resume needs --out RUN, the run directory to continue")
        system = {k: given[k] for k in ("device", "threads") if k in given}
        fixed = _changed_on_resume(args, family, given, {"epochs", *system})
        if fixed:
            raise ConfigError(
                f"--resume continues a run with its own config.json; only --epochs, --device "
                f"and --threads may change (got "
                f"{', '.join('--' + k.replace('_', '-') for k in sorted(fixed))})"
            )
        out, cfg = args.out, None
    else:
        cfg = make_config(given, family)
        out = getattr(args, "out", None) or _default_out(family, cfg)
        print(f"training {family.name} ({_architecture(cfg)}) on {cfg.data} into {out}")
    try:
        result = train_run(out, cfg, resume=resume, epochs=given.get("epochs") if resume else None,
                           system=system, progress=progress)  # fmt: skip
    except KeyboardInterrupt:
        from rnnlab.train.checkpoint import CHECKPOINT

        if (Path(out) / CHECKPOINT).is_file():
            print(f"stopped; continue with: rnnlab train --out {out} --resume", file=sys.stderr)
        raise
    print(family.summary(result, out))
    return 0


def _changed_on_resume(
    args: argparse.Namespace, family: Any, given: dict[str, Any], free: set[str]
) -> set[str]:
    """The options of a --resume line that differ from the run's config.json (an option given
    with the value the run already has changes nothing, so it is accepted)."""
    from dataclasses import replace

    from rnnlab.train.rundir import read_run_config

    options = {k: v for k, v in given.items() if k not in free}
    if not options and not hasattr(args, "model"):
        return set()
    saved_family, saved, _ = read_run_config(Path(args.out))
    changed = {"model"} if getattr(args, "model", saved_family.name) != saved_family.name else set()
    if changed or saved_family is not family:
        return changed | set(options)
    try:
        candidate = family.resolve(replace(saved, **options))
    except ConfigError:
        return set(options)
    return {k for k in options if getattr(candidate, k) != getattr(saved, k)}


def _architecture(cfg: Any) -> str:
    cell = getattr(cfg, "cell", cfg.family)  # a family without cells (tcn): its name
    layers = getattr(cfg, "num_layers", 1)
    return f"{cell}, H={getattr(cfg, 'hidden_size', '?')}" + (f" x {layers}" if layers > 1 else "")


def _default_out(family: Any, cfg: Any) -> Path:
    data = Path(cfg.data).stem if "." in cfg.data else cfg.data
    stamp = time.strftime("%Y%m%d-%H%M%S")
    cell, hidden = getattr(cfg, "cell", ""), getattr(cfg, "hidden_size", "")
    return Path("runs") / f"{data}-{family.name}-{cell}-h{hidden}-s{cfg.seed}-{stamp}"


# --- eval, sample, generate ---------------------------------------------------------------------
def _eval(args: argparse.Namespace) -> int:
    from rnnlab.families import FAMILIES, Problem
    from rnnlab.train.rundir import load_run

    if not 0 <= args.iw_samples <= 10**5:
        raise ConfigError(f"--iw-samples must be 0 (off) or a number of samples up to 100,000, "
                          f"got {args.iw_samples}")  # fmt: skip
    run = load_run(args.run, args.device)
    family, data = run.family, args.data or run.cfg.data
    if data != run.cfg.data and not (family.portable_data and family.accepts(data, {})):
        raise ConfigError(f"a {family.name} run on {run.cfg.data!r} cannot be evaluated on "
                          f"{data!r}")  # fmt: skip
    problem = run.problem(data)
    if args.iw_samples and type(problem).importance_weighted is Problem.importance_weighted:
        latent = [f.name for f in FAMILIES.values() if f.latent]
        raise ConfigError(f"--iw-samples applies to models with latent variables "
                          f"({', '.join(latent)}), not {family.name}")  # fmt: skip
    figures = problem.evaluate(args.split)
    epoch = f" (checkpoint of epoch {run.meta.get('epoch')})"
    for line in family.eval_lines(args.split, figures, data):
        print(line + epoch)
    if args.iw_samples:
        iw = problem.importance_weighted(args.split, args.iw_samples)
        assert iw is not None  # the family's problem computes it (checked above)
        for line in family.iw_lines(args.split, iw, data):
            print(line)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from rnnlab.report import compare_table, plot_curves

    _check_parents(args.plot)
    _check_plot(args.plot)
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
    from rnnlab.data.polyphonic import is_polyphonic

    if Path(args.name).suffix.lower() in (".csv", ".npy", ".npz") and not is_polyphonic(args.name):
        return _series_show(args)
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


def _series_show(args: argparse.Namespace) -> int:
    """A real-valued series: its columns, sequences and lengths, each column's statistics."""
    import numpy as np

    from rnnlab.data.series import detect_season, read_series, time_splits

    columns = [c.strip() for c in args.columns.split(",") if c.strip()] or None
    series = read_series(Path(args.name), columns=columns, id_column=args.id_column or None)
    info = series.describe()
    lengths = f"{info['length_min']}-{info['length_max']}"
    print(f"{series.name} ({series.source}): {info['num_sequences']} sequence(s), "
          f"{info['num_steps']} steps, lengths {lengths}")  # fmt: skip
    first = series.sequences[0]
    train_end = time_splits(len(first))["train"][1]
    print(f"season detected on the first sequence's training part: "
          f"{detect_season(first[:train_end])}")  # fmt: skip
    print("| column | mean | std | min | max |\n| --- | --- | --- | --- | --- |")
    rows = np.concatenate(series.sequences)
    for d, name in enumerate(series.columns):
        col = rows[:, d]
        print(f"| {name} | {col.mean():.4g} | {col.std():.4g} | {col.min():.4g} | "
              f"{col.max():.4g} |")  # fmt: skip
    return 0


def _import_midi(args: argparse.Namespace) -> int:
    from rnnlab.data.midi import import_midi_dir
    from rnnlab.data.polyphonic import BUNDLED, save_npz, user_data_dir

    if not 1 <= args.frames_per_beat <= 96:
        raise ConfigError(f"--frames-per-beat must be in [1, 96], got {args.frames_per_beat}")
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


def _make_speech(args: argparse.Namespace) -> int:
    from rnnlab.data import synth_speech
    from rnnlab.data.polyphonic import user_data_dir
    from rnnlab.data.text import find_corpus

    _check_seed(args.seed)
    if not 10 <= args.utterances <= 1_000_000:
        raise ConfigError(f"--utterances must be in [10, 1000000], got {args.utterances}")
    spec = synth_speech.SynthSpec(utterances=args.utterances, seed=args.seed)
    ptb = find_corpus("ptb", args.data_dir)
    lines = (ptb / "ptb.train.txt").read_text().splitlines()
    out = args.out_dir or user_data_dir() / synth_speech.NAME
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done % 200 == 0 or done == total:
            print(f"  {done}/{total} utterances, {time.perf_counter() - started:.0f} s",
                  file=sys.stderr)  # fmt: skip

    manifest = synth_speech.make(spec, lines, out, progress)
    sizes = ", ".join(f"{k} {v}" for k, v in manifest["utterances"].items())
    print(
        f"{synth_speech.NAME}: {sizes} utterances, {len(manifest['phones'])} phones, "
        f"{manifest['espeak_ng']} -> {out}\ncontent sha256 {manifest['content_sha256']}"
    )
    return 0


def _check_seed(seed: int, flag: str = "--seed") -> None:
    from rnnlab.families.base import SEED_MAX

    if not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"{flag} must be in [0, {SEED_MAX}], got {seed}")


def _check_plot(path: Path | None) -> None:
    """A picture's file name must end in a format matplotlib writes."""
    if path is None:
        return
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    if path.suffix.lower().lstrip(".") not in formats:
        raise ConfigError(f"{path}: a picture ends in one of {', '.join('.' + f for f in formats)}")


def _check_output(path: Path | None, flag: str, suffixes: tuple[str, ...] | None) -> None:
    """A file rnnlab writes: a new path or a regular file (never a folder, a device, a pipe, or
    a link to one), named with its format's extension (``suffixes``; None: a picture)."""
    if path is None:
        return
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file name")
    if (path.exists() or path.is_symlink()) and not path.is_file():
        raise ConfigError(f"{flag} {path} is not a regular file (a device, a pipe or a broken "
                          "link); give a new file name")  # fmt: skip
    if suffixes is None:
        _check_plot(path)
    elif path.suffix.lower() not in suffixes:
        raise ConfigError(f"{flag} {path}: the file this run writes ends in "
                          f"{' or '.join(suffixes)}")  # fmt: skip


def _check_parents(*paths: Path | None) -> None:
    """An output file's folder must exist (rnnlab does not invent folders for files)."""
    for path in paths:
        if path is not None and not path.parent.is_dir():
            raise ConfigError(f"{path}: the folder {path.parent} does not exist")


def _upgrade(args: argparse.Namespace) -> int:
    from rnnlab.train.rundir import upgrade_run

    for run in args.runs:
        name = upgrade_run(run)
        print(f"{run}: upgraded ({name}); the old config is kept as config.v1.json")
    return 0


def _models(args: argparse.Namespace) -> int:
    from rnnlab.families import FAMILIES

    print("| model | what | selected by | draws |\n| --- | --- | --- | --- |")
    for f in FAMILIES.values():
        draws = {"frames": "rnnlab sample", "text": "rnnlab generate"}.get(f.draws or "", "-")
        print(f"| {f.name} | {f.title} | {f.score.label} ({f.score.unit}) | {draws} |")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from rnnlab.families import SampleRequest
    from rnnlab.train.rundir import load_run

    if args.frames is not None and not 1 <= args.frames <= 10**5:
        raise ConfigError(f"--frames must be in [1, 100,000], got {args.frames}")
    if not 4 <= args.bpm <= 1000 or not 1 <= args.frames_per_beat <= 96:
        raise ConfigError(f"--bpm must be in [4, 1000] (MIDI's tempo range) and --frames-per-beat "
                          f"in [1, 96], got {args.bpm} and {args.frames_per_beat}")  # fmt: skip
    _check_seed(args.seed)
    run = load_run(args.run, args.device)
    if run.family.draws != "frames":
        hint = "; it writes text: rnnlab generate RUN" if run.family.draws == "text" else ""
        raise ConfigError(f"{args.run} is a {run.family.name} run, which draws no frames{hint}")
    if args.out is None and args.png is None:
        raise ConfigError("sample needs --out FILE, --png FILE, or both")
    _check_parents(args.out, args.png)
    _check_output(args.out, "--out", run.family.sample_suffixes)
    _check_output(args.png, "--png", None)
    what = " ".join(filter(None, (run.family.name, getattr(run.cfg, "cell", ""))))
    label = f"{what} on {run.cfg.data}, epoch {run.meta.get('epoch')}"
    request = SampleRequest(args.out, args.png, args.frames or 0, args.seed,
                            args.frames_per_beat, args.bpm, label)  # fmt: skip
    for line in run.family.sample(run.model, run.cfg, run.assets, request):
        print(line)
    return 0


def _decode(args: argparse.Namespace) -> int:
    from rnnlab.families.base import DecodeRequest
    from rnnlab.train.rundir import load_run

    if not 1 <= args.n <= 10**5 or not 0 <= args.beam <= 1024:
        raise ConfigError(f"--n must be in [1, 100,000] and --beam in [0, 1024], got {args.n} "
                          f"and {args.beam}")  # fmt: skip
    for path in args.audio:
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
    run = load_run(args.run, args.device)
    request = DecodeRequest(tuple(args.audio), args.split, args.n, args.beam)
    for line in run.family.decode(run, request):
        print(line)
    return 0


def _generate(args: argparse.Namespace) -> int:
    from rnnlab.train.rundir import load_run

    if args.n < 1 or args.max_len < 1 or args.top_k < 0 or args.temperature < 0:
        raise ConfigError("--n and --max-len must be positive, --top-k and --temperature >= 0")
    if args.n > 10**5 or args.max_len > 10**5:
        raise ConfigError("--n and --max-len are at most 100,000")
    _check_seed(args.seed)
    run = load_run(args.run, args.device)
    if run.family.draws != "text":
        hint = "; it draws frames: rnnlab sample RUN" if run.family.draws == "frames" else ""
        raise ConfigError(f"{args.run} is a {run.family.name} run, which writes no text{hint}")
    for line in run.family.generate(run.model, run.assets, args.n, args.temperature, args.top_k,
                                    args.seed, args.max_len):  # fmt: skip
        print(line)
    return 0


def _load_encoder(run_dir: Path, device: str) -> Any:
    from rnnlab.families import FAMILIES
    from rnnlab.train.rundir import load_run

    run = load_run(run_dir, device)
    if not hasattr(run.family, "encode"):
        able = [f.name for f in FAMILIES.values() if hasattr(f, "encode")]
        raise ConfigError(f"{run_dir} is a {run.family.name} run; this needs a model with an "
                          f"encoder ({', '.join(able)})")  # fmt: skip
    return run


def _encode(run: Any, text: str) -> Any:
    mean, unknown = run.family.encode(run.model, run.assets, text)
    if unknown:
        print(f"rnnlab: note: {unknown} word(s) of {text!r} are not in the vocabulary: <unk>")
    return mean


def _words(ids: list[int], vocab: list[str]) -> str:
    return " ".join(vocab[i] for i in ids)


def _reconstruct(args: argparse.Namespace) -> int:
    run = _load_encoder(args.run, args.device)
    mean = _encode(run, args.sentence)
    print(_words(run.model.generate(mean)[0], run.assets["vocab"]))
    return 0


def _interpolate(args: argparse.Namespace) -> int:
    import torch

    if not 2 <= args.steps <= 1000:
        raise ConfigError(f"--steps must be in [2, 1000], got {args.steps}")
    run = _load_encoder(args.run, args.device)
    a, b = _encode(run, args.first), _encode(run, args.second)
    weights = torch.linspace(0, 1, args.steps, device=a.device)[:, None]
    decoded = run.model.generate((1 - weights) * a + weights * b)
    for w, ids in zip(weights, decoded, strict=True):
        print(f"{float(w):.2f}  {_words(ids, run.assets['vocab'])}")
    return 0


def _study(args: argparse.Namespace) -> int:
    import json

    from rnnlab.study import runner

    if not args.name or args.name in (".", "..") or "/" in args.name or "\\" in args.name:
        raise ConfigError(f"a study's name is a plain folder name (no '/'), got {args.name!r}")
    if args.dir.exists() and not args.dir.is_dir():
        raise ConfigError(f"--dir {args.dir} is a file, not a folder")
    _check_seed(getattr(args, "seed", 0))
    if not 0 <= getattr(args, "worker", 0) <= 999:
        raise ConfigError(f"--worker must be in [0, 999] (it offsets the sampler's seed), got "
                          f"{args.worker}")  # fmt: skip
    if getattr(args, "max_trials", None) is not None and args.max_trials < 1:
        raise ConfigError(f"--max-trials must be positive, got {args.max_trials}")
    if args.storage is None and args.command != "create":
        runner.check_default_storage(args.dir, args.name)
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
        given = {"device": args.device, "threads": args.threads or None}
        system = {k: v for k, v in given.items() if v is not None}
        ran = runner.run_worker(args.name, storage, args.worker, args.max_trials,
                                directory=args.dir, system=system)  # fmt: skip
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

    if not 0 <= args.seq_len <= 10**6 or not 0 <= args.delay <= 10**6:
        raise ConfigError("--seq-len and --delay must be in [0, 1,000,000]")
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
