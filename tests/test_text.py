"""Text: the corpus views, Zaremba's batching and BPTT state carrying against hand-worked
examples, the language model's options, metrics, bad input and the CLI."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from rnnlab.cli import main
from rnnlab.data.text import Corpus, batchify, bptt_windows, read_corpus
from rnnlab.errors import DataError, RunDirError
from rnnlab.models.lm import LanguageModel
from rnnlab.models.rnn import ModelConfig
from rnnlab.report import run_summary

LINES = {"train": ["the cat sat", "the dog sat down"], "valid": ["the cat"],
         "test": ["a dog sat"]}  # fmt: skip


def rows(run):
    """A run's metrics.jsonl rows without their wall times."""
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]  # fmt: skip


def _corpus_dir(tmp_path, name="toy", lines=LINES):
    for split, rows in lines.items():
        (tmp_path / f"{name}.{split}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return tmp_path


def test_the_words_view_counts_unknown_tokens():
    corpus = Corpus.from_lines(LINES)
    assert corpus.vocab == ["<eos>", "<unk>", "cat", "dog", "down", "sat", "the"]
    words = [corpus.vocab[i] for i in corpus.streams["test"].tolist()]
    assert words == ["<unk>", "dog", "sat", "<eos>"] and corpus.unknown["test"] == 1
    assert corpus.streams["train"].numel() == 3 + 1 + 4 + 1


def test_the_chars_view():
    corpus = Corpus.from_lines(LINES, chars=True)
    chars = [corpus.vocab[i] for i in corpus.streams["valid"].tolist()]
    assert "".join(chars[:-1]) == "the_cat" and chars[-1] == "<eos>"


def test_zaremba_batching_and_windows_by_hand():
    stream = torch.arange(11)
    cols = batchify(stream, 2)  # 5 tokens a column, the 11th dropped
    assert cols.tolist() == [[0, 5], [1, 6], [2, 7], [3, 8], [4, 9]]
    windows = bptt_windows(cols, 3)
    assert [x.tolist() for x, _ in windows] == [[[0, 5], [1, 6], [2, 7]], [[3, 8]]]
    assert [y.tolist() for _, y in windows] == [[[1, 6], [2, 7], [3, 8]], [[4, 9]]]


@pytest.mark.parametrize("cell", ["lstm", "gru", "lstm-v"])
def test_carrying_the_state_across_windows_equals_one_long_window(cell):
    torch.manual_seed(0)
    cfg = ModelConfig(model="lm", cell=cell, hidden_size=8, num_layers=2, dropout=0.0)
    lm = LanguageModel(cfg, 20).double().eval()
    tokens = torch.randint(0, 20, (12, 3))
    whole, _ = lm(tokens)
    first, state = lm(tokens[:5])
    second, _ = lm(tokens[5:], state)
    torch.testing.assert_close(torch.cat([first, second]), whole)


def test_a_uniform_model_has_the_vocabulary_size_as_perplexity():
    V = 37
    logits = torch.zeros(50, V)
    targets = torch.randint(0, V, (50,))
    assert math.exp(float(F.cross_entropy(logits, targets))) == pytest.approx(V)


def test_tied_embeddings_and_options():
    cfg = ModelConfig(model="lm", hidden_size=6, tied=True, dropout=0.5, variational=True,
                      embedding_dropout=0.1, weight_drop=0.3, num_layers=2)  # fmt: skip
    lm = LanguageModel(cfg, 11)
    assert lm.decoder.weight is lm.embedding.weight
    tokens = torch.randint(0, 11, (4, 2))
    lm.train()
    a, _ = lm(tokens)
    b, _ = lm(tokens)
    assert not torch.equal(a, b)  # fresh masks every call
    lm.eval()
    torch.testing.assert_close(lm(tokens)[0], lm(tokens)[0])  # no dropout in evaluation
    a.sum().backward()
    assert lm.rnn.layer_cells[0].parametrizations.weight_hh.original.grad is not None


def test_bad_text_input_gets_one_clear_line(tmp_path):
    _corpus_dir(tmp_path)
    (tmp_path / "toy.valid.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(DataError, match=r"toy.valid.txt: not UTF-8"):
        read_corpus("toy", tmp_path)
    (tmp_path / "toy.valid.txt").write_text("\n\n")
    with pytest.raises(DataError, match=r"toy.valid.txt: empty"):
        read_corpus("toy", tmp_path)
    with pytest.raises(DataError, match="lacks"):
        read_corpus("other", tmp_path)


def test_train_a_language_model_from_the_cli(tmp_path, capsys):
    (tmp_path / "corpus").mkdir()
    data = _corpus_dir(tmp_path / "corpus")
    run = tmp_path / "run"
    argv = ["train", "--data", "toy", "--data-dir", str(data), "--model", "lm", "--cell", "gru",
            "--hidden-size", "8", "--num-layers", "1", "--dropout", "0", "--bptt", "3",
            "--batch-size", "2", "--epochs", "2", "--optimizer", "sgd", "--lr", "1",
            "--lr-decay-start", "1", "--out", str(run), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "test ppl" in capsys.readouterr().out
    result = json.loads((run / "result.json").read_text())
    assert result["test_ppl"] == pytest.approx(math.exp(result["test_nll"]))
    assert result["unknown_tokens"]["test"] == 1 and result["vocab_size"] == 7
    assert main(["eval", str(run), "--split", "test"]) == 0
    assert f"test: ppl {result['test_ppl']:.3f}" in capsys.readouterr().out
    lrs = [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lrs == [1.0, 0.5]  # Zaremba's schedule: halved every epoch after the first
    assert main(["train", "--data", "ptb", "--model", "rnn", "--no-progress"]) == 2
    assert "--model rnn cannot train on --data 'ptb' (is data of the lm family)" in (
        capsys.readouterr().err
    )


def test_a_tied_language_model_checkpoints_resumes_and_evaluates(tmp_path, capsys):
    """Tied weights share memory: safetensors refuses them unless they are written once."""
    (tmp_path / "corpus").mkdir()
    data = _corpus_dir(tmp_path / "corpus")
    argv = ["train", "--data", "toy", "--data-dir", str(data), "--model", "lm", "--cell", "lstm",
            "--hidden-size", "8", "--num-layers", "2", "--tied", "--variational", "--dropout",
            "0.3", "--bptt", "3", "--batch-size", "2", "--optimizer", "sgd", "--lr", "1",
            "--no-progress"]  # fmt: skip
    assert main([*argv, "--epochs", "3", "--out", str(tmp_path / "whole")]) == 0
    assert main([*argv, "--epochs", "2", "--out", str(tmp_path / "split")]) == 0
    assert main(["train", "--out", str(tmp_path / "split"), "--resume", "--epochs", "3",
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()

    assert rows(tmp_path / "split") == rows(tmp_path / "whole")
    result = json.loads((tmp_path / "split" / "result.json").read_text())
    assert main(["eval", str(tmp_path / "split"), "--split", "test"]) == 0
    assert f"test: ppl {result['test_ppl']:.3f}" in capsys.readouterr().out
    # A run stopped by hand (no result.json) still reports its parameter count, the tied weight
    # counted once.
    (tmp_path / "split" / "result.json").unlink()
    assert run_summary(tmp_path / "split")["num_params"] == result["num_params"]
    (tmp_path / "split" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(RunDirError, match="model.safetensors is not a readable safetensors file"):
        run_summary(tmp_path / "split")


@pytest.mark.parametrize(
    "options",
    [["--norm", "batch", "--norm-steps", "2"], ["--norm", "assorted-time", "--quant-bits", "4"]],
)
def test_a_normalised_language_model_resumes_and_evaluates_exactly(tmp_path, capsys, options):
    """The population statistics of recurrent batch norm are saved with the weights (a resumed
    run and `rnnlab eval` use them), and --reset-state starts every window from zeros."""
    (tmp_path / "corpus").mkdir()
    data = _corpus_dir(tmp_path / "corpus")
    argv = ["train", "--data", "toy-char", "--data-dir", str(data), "--model", "lm", "--cell",
            "lstm", "--hidden-size", "8", "--num-layers", "1", "--bptt", "4", "--batch-size", "3",
            "--optimizer", "adam", "--lr", "0.01", "--reset-state", "--no-progress",
            *options]  # fmt: skip
    assert main([*argv, "--epochs", "3", "--out", str(tmp_path / "whole")]) == 0
    assert main([*argv, "--epochs", "2", "--out", str(tmp_path / "split")]) == 0
    assert main(["train", "--out", str(tmp_path / "split"), "--resume", "--epochs", "3",
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()

    assert rows(tmp_path / "split") == rows(tmp_path / "whole")
    result = json.loads((tmp_path / "split" / "result.json").read_text())
    assert main(["eval", str(tmp_path / "split"), "--split", "test"]) == 0
    assert f"test: bpc {result['test_bpc']:.3f}" in capsys.readouterr().out


def test_reset_state_starts_every_window_from_zeros(tmp_path):
    from rnnlab.families.lm import EVAL_COLUMNS, LMConfig, TextProblem

    (tmp_path / "corpus").mkdir()
    lines = {**LINES, "valid": ["the cat sat down and the dog sat on the cat " * 4]}
    data = _corpus_dir(tmp_path / "corpus", lines=lines)
    scores = {}
    for reset in (False, True):
        cfg = LMConfig(data="toy-char", data_dir=str(data), hidden_size=6, num_layers=1, bptt=3,
                       batch_size=2, reset_state=reset)  # fmt: skip
        torch.manual_seed(0)
        problem = TextProblem(cfg, None, None)
        scores[reset] = problem.evaluate("valid")["score"]
    # By hand: every window of the valid columns from a zero state.
    model = problem.model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for inputs, targets in bptt_windows(batchify(problem.corpus.streams["valid"],
                                                     EVAL_COLUMNS), 3):  # fmt: skip
            logits, _ = model(inputs)
            nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
            total += float(nll)
            count += targets.numel()
    assert total / count == pytest.approx(scores[True], rel=1e-6)
    assert scores[False] != pytest.approx(scores[True], rel=1e-6)
