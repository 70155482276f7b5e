"""Every registered model family through every command that applies to it: train from the CLI
with only --data (and --model where the data does not imply it), eval, sample or generate,
compare, a study, --help, and run directories of the old format. Parametrised over the registry:
a new family must add its tiny data to family_fixtures.family_data, or the first test fails."""

import json
from dataclasses import fields

import numpy as np
import optuna
import pytest
import torch
from family_fixtures import family_data

import rnnlab
from rnnlab.cli import main, parse_train
from rnnlab.families import FAMILIES, choose_family, family_names, make_config
from rnnlab.study import runner
from rnnlab.study.report import write_report


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The tiny data of each family: the `rnnlab train` arguments that name it."""
    return family_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """One run of each family, trained for one epoch with the family's defaults."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name in family_names():
        out[name] = root / name
        argv = ["train", *data[name], "--epochs", "1", "--out", str(out[name]), "--no-progress"]
        assert main(argv) == 0, name
    return out


def test_every_family_has_tiny_data(data):
    assert set(data) == set(FAMILIES)


@pytest.mark.parametrize("name", family_names())
def test_train_with_only_data_records_the_family(name, runs, capsys):
    run = runs[name]
    family = FAMILIES[name]
    document = json.loads((run / "config.json").read_text())
    assert document["family"] == name and document["score"] == family.score.to_dict()
    assert set(document["config"]) == {f.name for f in fields(family.config_type)}
    result = json.loads((run / "result.json").read_text())
    assert result["model"] == name and result["score"]["unit"] == family.score.unit
    assert result["valid_score"] is not None and result["test_score"] is not None
    assert (run / "assets.json").is_file()
    if family.latent:  # k chosen so that the final estimate costs about one epoch, recorded
        assert 1 <= result["iw_samples"] <= 100
    model = rnnlab.load(run)
    assert isinstance(model, torch.nn.Module) and not model.training


@pytest.mark.parametrize("name", family_names())
def test_eval_and_importance_weighting(name, runs, capsys):
    run, family = runs[name], FAMILIES[name]
    assert main(["eval", str(run), "--split", "valid"]) == 0
    out = capsys.readouterr().out
    assert "(checkpoint of epoch 1)" in out
    code = main(["eval", str(run), "--split", "test", "--iw-samples", "2"])
    if family.latent:
        assert code == 0 and "importance-weighted NLL" in capsys.readouterr().out
    elif name != "sentence-lm":  # the sentence LM answers with its exact NLL (k = 1)
        assert code == 2 and "latent variables" in capsys.readouterr().err


@pytest.mark.parametrize("name", family_names())
def test_sample_or_generate(name, runs, tmp_path, capsys):
    run, family = runs[name], FAMILIES[name]
    png, out = tmp_path / "x.png", tmp_path / ("x.csv" if name == "series" else "x.mid")
    sampled = main(["sample", str(run), "--png", str(png), "--out", str(out), "--frames", "12"])
    generated = main(["generate", str(run), "--n", "3", "--temperature", "1", "--top-k", "4"])
    captured = capsys.readouterr()
    if family.draws == "frames":
        assert sampled == 0 and png.stat().st_size > 0 and out.stat().st_size > 0
        assert generated == 2 and "rnnlab sample" in captured.err
    elif family.draws == "text":
        assert generated == 0 and len(captured.out.splitlines()) == 3
        assert sampled == 2 and "rnnlab generate" in captured.err
    else:
        assert sampled == 2 and generated == 2


def test_compare_puts_each_unit_in_its_own_columns_and_panel(runs, tmp_path, capsys):
    plot = tmp_path / "curves.png"
    assert main(["compare", *map(str, runs.values()), "--plot", str(plot)]) == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0]
    for family in FAMILIES.values():
        assert f"{family.score.label} [{family.score.unit}]" in header
    assert "| model |" in header and plot.stat().st_size > 0
    # The VRNN's and the sentence VAE's IW estimates are per frame and per sentence: two columns.
    assert "test IW NLL [nats/frame]" in header and "test IW NLL [nats/sentence]" in header
    for name in family_names():
        assert f"| {name} |" in table


@pytest.mark.parametrize("name", family_names())
def test_help_lists_the_familys_options_with_its_defaults(name, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--model", name, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in fields(FAMILIES[name].config_type):
        assert "--" + f.name.replace("_", "-") in text
        assert f"(default: {f.default!r})" in text
    assert "training options:" in text and "model options:" in text


@pytest.mark.parametrize("name", family_names())
def test_a_study_completes_and_reports(name, data, tmp_path):
    options = data[name]
    fixed = {"epochs": 1, "threads": 1}
    for flag, value in zip(options[::2], options[1::2], strict=True):
        key = flag[2:].replace("-", "_")
        fixed[key] = int(value) if value.isdigit() else value
    space = {"params": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
             "fixed": fixed}  # fmt: skip
    storage = runner.default_storage(tmp_path, "s")
    runner.create_study("s", space, storage, tmp_path, 2)
    mine = tmp_path / "worker-dir"  # a worker's own --dir holds its trials' run directories
    assert runner.run_worker("s", storage, log=lambda s: None, directory=mine) == 2
    study = optuna.load_study(study_name="s", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert all(t.user_attrs["run"].startswith(str(mine / "s")) for t in study.trials)
    assert study.trials[0].user_attrs["score"] == FAMILIES[name].score.to_dict()
    page, md = write_report("s", storage, tmp_path / "report")
    assert FAMILIES[name].score.unit in md.read_text() and page.stat().st_size > 0


def test_a_run_directory_of_the_old_format_loads_and_upgrades(runs, tmp_path, capsys):
    """Format 1 ({"model": ..., "train": ...}, no assets.json): eval and compare read it as it
    is; `rnnlab upgrade` rewrites it, after which it resumes."""
    import shutil

    from rnnlab.models.rnn import ModelConfig

    run = tmp_path / "old"
    shutil.copytree(runs["rnn-nade"], run)
    new = json.loads((run / "config.json").read_text())["config"]
    model_keys = {f.name for f in fields(ModelConfig)}
    old = {"model": {k: v for k, v in new.items() if k in model_keys} | {"model": "rnn",
                                                                         "output": "nade"},
           "train": {k: v for k, v in new.items() if k not in model_keys}}  # fmt: skip
    (run / "config.json").write_text(json.dumps(old))
    (run / "assets.json").unlink()
    assert main(["eval", str(run)]) == 0
    assert main(["compare", str(run)]) == 0
    assert "| rnn-nade |" in capsys.readouterr().out
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2"]) == 2
    assert f"rnnlab upgrade {run}" in capsys.readouterr().err
    assert main(["upgrade", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["family"] == "rnn-nade"
    assert (run / "config.v1.json").is_file() and (run / "assets.json").is_file()
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_options_a_family_cannot_honour_are_refused(data, capsys):
    cases = [
        (["--model", "vrnn", "--num-layers", "2"], "--num-layers is not an option of the vrnn"),
        (["--bptt", "35"], "--bptt is not an option of the rnn model (it is one of lm)"),
        (["--model", "sentence-lm", "--z-size", "4"], "--z-size is not an option of the sen"),
        (["--data", "adding", "--delay", "3"], "--delay applies only with --data recall"),
        (["--model", "lm", "--data", "jsb"], "--model lm cannot train on --data 'jsb'"),
        (["--model", "vrnn", "--data", "adding"], "is data of the task family"),
        (["--lr", "inf"], "not a finite number"),
        (["--data", "x.wav"], "not a kind of file rnnlab reads"),
    ]
    for argv, message in cases:
        assert main(["train", *argv]) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_a_series_csv_with_an_id_column_trains_on_each_sequence(tmp_path, capsys):
    rng = np.random.default_rng(1)
    rows = ["station,temp,load"]
    for station in ("a", "b"):
        t = np.arange(120)
        for x, y in zip(np.sin(t / 3) + 0.1 * rng.standard_normal(120), 0.02 * t, strict=True):
            rows.append(f"{station},{x:.4f},{y:.4f}")
    csv = tmp_path / "stations.csv"
    csv.write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    argv = ["train", "--data", str(csv), "--id-column", "station", "--epochs", "2",
            "--horizon", "6", "--out", str(run), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((run / "result.json").read_text())
    assets = json.loads((run / "assets.json").read_text())
    assert assets["data"]["num_sequences"] == 2 and assets["columns"] == ["temp", "load"]
    assert result["horizon"] == 6 and result["forecast_origins"] == 2 * (18 // 6)
    assert result["test_crps"] > 0 and result["test_naive_crps"] > 0


def test_the_shipped_study_space_still_loads():
    from pathlib import Path

    from rnnlab.study.space import load_space, space_family

    space = load_space(str(Path(__file__).resolve().parents[1] / "docs/studies/greff-reduced.json"))
    assert space_family(space).name == "rnn" and len(space["params"]["cell"]["choices"]) == 9


def test_the_sentence_models_honour_every_layer_option(data, tmp_path):
    run = tmp_path / "vae"
    argv = ["train", *data["sentence-vae"], "--num-layers", "2", "--layer-norm", "--zoneout",
            "0.1", "--hidden-size", "8", "--z-size", "2", "--epochs", "1", "--iw-samples", "2",
            "--out", str(run), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    model = rnnlab.load(run)
    for stack in (model.encoder, model.decoder):
        cfg = stack.config
        assert cfg.num_layers == 2 and cfg.layer_norm and cfg.zoneout == 0.1
    assert json.loads((run / "result.json").read_text())["num_layers"] == 2


def test_the_vrnn_follows_its_kl_schedule(tiny_npz):
    from rnnlab.families import make_config
    from rnnlab.losses import kl_weight

    cfg = make_config({"model": "vrnn", "data": str(tiny_npz), "hidden_size": 4, "z_size": 2,
                       "kl_schedule": "cyclical", "kl_anneal": 4})  # fmt: skip
    problem = FAMILIES["vrnn"].problem(cfg)
    weights = []
    for epoch in range(1, 7):
        problem.train_batches(epoch)
        weights.append(problem.kl_weight)
    assert weights == [kl_weight("cyclical", e, 4) for e in range(1, 7)]
    assert weights == [0.5, 1.0, 1.0, 0.0, 0.5, 1.0]


def test_sample_without_frames_draws_the_familys_default(runs, tmp_path, capsys):
    assert main(["sample", str(runs["rnn"]), "--out", str(tmp_path / "x.mid")]) == 0
    assert "(200 frames" in capsys.readouterr().out
    assert main(["sample", str(runs["series"]), "--out", str(tmp_path / "f.csv")]) == 0
    horizon = json.loads((runs["series"] / "assets.json").read_text())["horizon"]
    assert f"({horizon} steps past" in capsys.readouterr().out


def test_a_missing_npz_is_taken_as_a_series_and_named_as_missing(tmp_path, capsys):
    # Nothing can tell a missing .npz's kind: the series family takes it (so the series options
    # of a command naming a file yet to be generated parse), and training names the missing file.
    missing = tmp_path / "not-made-yet.npz"
    assert choose_family(None, {"data": str(missing)}).name == "series"
    family, _, given = parse_train(["--data", str(missing), "--subsample-keep", "0.5"])
    make_config(given, family)
    out = tmp_path / "r"
    assert main(["train", "--data", str(missing), "--epochs", "1", "--out", str(out)]) == 2
    assert f"{missing} does not exist" in capsys.readouterr().err
    assert not out.exists()  # nothing left to block the next start


@pytest.mark.parametrize("name", family_names())
def test_every_boolean_option_is_off_by_default(name):
    # The command line's boolean options are flags that turn a field on: one that defaulted to
    # true could never be turned off (name it the other way round).
    config = FAMILIES[name].config_type
    on = [f.name for f in fields(config) if f.type in (bool, "bool") and f.default is True]
    assert not on, f"{name}: {on} default to true"
