"""The convolutional language models (tcn-lm, gcnn-lm): causality, the receptive field, the
gated linear unit by hand, windows with context scoring every token once, the CLI (train, eval,
generate, compare beside an lm run, refusal of recurrent options) and a bit-exact resume."""

import json

import pytest
import torch
import torch.nn.functional as F

from rnnlab.cli import main
from rnnlab.families.conv_lm import (
    IGNORE,
    ConvTextProblem,
    GCNNLMConfig,
    TCNLMConfig,
    context_windows,
)
from rnnlab.models.conv_lm import GLU, ConvLanguageModel, ConvLMConfig, gcnn_receptive_field
from rnnlab.models.tcn import receptive_field

LINES = {"train": ["the cat sat on the mat", "a dog ran in the park", "the dog sat on a cat"],
         "valid": ["the cat sat on a mat and the dog ran in the big park"],
         "test": ["a big dog sat", "the mat is red"]}  # fmt: skip
SMALL = ["--embedding-size", "6", "--hidden-size", "8", "--num-layers", "2", "--kernel-size",
         "2", "--seq-len", "12", "--context-len", "4", "--batch-size", "2", "--threads", "1",
         "--no-progress"]  # fmt: skip
MODELS = {
    "tcn": ConvLMConfig(kind="tcn", embedding_size=6, hidden_size=8, num_layers=3, kernel_size=3),
    "gcnn": ConvLMConfig(
        kind="gcnn", embedding_size=6, hidden_size=8, num_layers=3, kernel_size=3
    ),  # fmt: skip
    "gcnn-bottleneck": ConvLMConfig(
        kind="gcnn", embedding_size=6, hidden_size=8, num_layers=3, kernel_size=3, bottleneck=True
    ),  # fmt: skip
}


def rows(run):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]  # fmt: skip


def _corpus_dir(path, lines=LINES):
    path.mkdir(exist_ok=True)
    for split, text in lines.items():
        (path / f"toy.{split}.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


def _model(name, vocab=11):
    torch.manual_seed(0)
    return ConvLanguageModel(MODELS[name], vocab).eval()


@pytest.mark.parametrize("name", list(MODELS))
def test_changing_an_input_changes_no_earlier_output(name):
    model = _model(name)
    tokens = torch.randint(0, 11, (30, 2))
    before, _ = model(tokens)
    t = 17
    changed = tokens.clone()
    changed[t] = (changed[t] + 1) % 11
    after, _ = model(changed)
    assert torch.equal(before[:t], after[:t])
    assert not torch.allclose(before[t], after[t])


@pytest.mark.parametrize("name", list(MODELS))
def test_the_receptive_field_is_the_formula(name):
    """By the gradient of the last output with respect to the embedded inputs: a product of
    small weights (Bai et al.'s N(0, 0.01)) that a difference of outputs would lose in float32
    on the farthest paths, but that is exactly zero beyond the receptive field."""
    model = _model(name)
    c = MODELS[name]
    expected = (receptive_field(c.num_layers, c.kernel_size) if c.kind == "tcn"
                else gcnn_receptive_field(c.num_layers, c.kernel_size, c.bottleneck))  # fmt: skip
    assert model.receptive_field == expected == {"tcn": 29, "gcnn": 13,
                                                 "gcnn-bottleneck": 7}[name]  # fmt: skip
    seen = []
    hook = model.blocks[0].register_forward_pre_hook(
        lambda _, args: seen.append(args[0].requires_grad_())
    )
    logits, _ = model(torch.randint(0, 11, (40, 16)))  # many columns: a ReLU may hide one
    hook.remove()
    (grad,) = torch.autograd.grad(logits[-1].sum(), seen[0])  # (B, E, T)
    reached = [bool(grad[..., -1 - back].abs().sum() > 0) for back in range(40)]
    assert all(reached[:expected]) and not any(reached[expected:])


def test_the_gated_linear_unit_by_hand():
    torch.manual_seed(0)
    glu = GLU(2, 3, kernel_size=2)
    x = torch.randn(1, 2, 5)  # (B, C_in, T)
    weight, bias = glu.conv.conv.weight.detach(), glu.conv.conv.bias.detach()  # (6, 2, 2): W, V
    h = glu(x).detach()
    for t in range(5):
        for o in range(3):
            a, b = float(bias[o]), float(bias[3 + o])  # h = (X * W + b) ⊗ σ(X * V + c)
            for j in range(2):  # tap j reads x_{t - 1 + j}; before the start, zeros
                if t - 1 + j >= 0:
                    a += float(weight[o, :, j] @ x[0, :, t - 1 + j])
                    b += float(weight[3 + o, :, j] @ x[0, :, t - 1 + j])
            assert float(h[0, o, t]) == pytest.approx(a * torch.sigmoid(torch.tensor(b)).item(),
                                                      abs=1e-6)  # fmt: skip


def test_windows_score_every_target_once_in_order():
    for n, seq_len, context in [(8, 4, 2), (30, 7, 3), (5, 9, 4), (21, 5, 0), (2, 3, 1)]:
        stream = torch.arange(n)[:, None]
        windows = context_windows(stream, seq_len, context)
        scored = torch.cat([y[y != IGNORE] for _, y in windows])
        assert scored.tolist() == list(range(1, n)), (n, seq_len, context)
        for x, y in windows:
            assert x.shape[0] <= seq_len and torch.equal(y[y != IGNORE], x[y != IGNORE] + 1)
            first = int((y == IGNORE).sum())  # each scored token has at least the context
            assert first == 0 or first >= context


@pytest.mark.parametrize("family, config", [("tcn", TCNLMConfig), ("gcnn", GCNNLMConfig)])
def test_evaluation_equals_one_pass_over_the_split(tmp_path, family, config):
    """With context_len >= R - 1 every scored prediction sees its whole receptive field: the
    windowed NLL is one pass's, over N - 1 targets, whatever the eval batch."""
    data = _corpus_dir(tmp_path / "corpus")
    scores = []
    for batch in (1, 3):
        cfg = config(
            data="toy-char",
            data_dir=str(data),
            embedding_size=6,
            hidden_size=8,
            num_layers=2,
            kernel_size=2,
            seq_len=11,
            context_len=7,
            batch_size=batch,
        )
        torch.manual_seed(0)
        problem = ConvTextProblem(cfg, family, None, None)
        assert problem.model.receptive_field - 1 <= 7
        scores.append(problem.evaluate("valid"))
    stream = problem.corpus.streams["valid"]
    with torch.no_grad():
        logits, _ = problem.model.eval()(stream[:-1, None])
        direct = F.cross_entropy(logits[:, 0], stream[1:], reduction="mean")
    assert scores[0]["tokens"] == scores[1]["tokens"] == stream.numel() - 1
    assert scores[0]["score"] == pytest.approx(float(direct), rel=1e-5)
    assert scores[1]["score"] == pytest.approx(float(direct), rel=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_feeding_a_token_at_a_time_with_the_state_equals_one_pass(name):
    """What generation does: the state is the last R - 1 tokens."""
    model = _model(name)
    tokens = torch.randint(0, 11, (35, 2))
    whole, _ = model(tokens)
    state, steps = None, []
    for t in range(35):
        logits, state = model(tokens[t : t + 1], state)
        steps.append(logits)
        assert state[0].shape[0] == min(t + 1, model.receptive_field - 1)
    torch.testing.assert_close(torch.cat(steps), whole)


@pytest.mark.parametrize("model", ["tcn-lm", "gcnn-lm"])
def test_train_eval_generate_and_compare_from_the_cli(tmp_path, capsys, model):
    data = _corpus_dir(tmp_path / "corpus")
    run, lm = tmp_path / "run", tmp_path / "lm"
    argv = ["train", "--model", model, "--data", "toy-char", "--data-dir", str(data),
            "--epochs", "2", "--out", str(run), *SMALL]  # fmt: skip
    assert main(argv) == 0
    assert f"toy-char {model} (2 x 8): test bpc" in capsys.readouterr().out
    result = json.loads((run / "result.json").read_text())
    assert result["model"] == model and result["score"]["unit"] == "nats/token"
    tokens = sum(len(line) + 1 for line in LINES["test"]) - 1  # characters and <eos>, less one
    assert main(["eval", str(run), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert f"test: bpc {result['test_bpc']:.3f}, NLL" in out and f"over {tokens} tokens" in out
    assert main(["generate", str(run), "--n", "2", "--max-len", "20", "--seed", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["train", "--model", "lm", "--data", "toy-char", "--data-dir", str(data),
                 "--hidden-size", "8", "--num-layers", "1", "--epochs", "1", "--threads", "1",
                 "--out", str(lm), "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["compare", str(run), str(lm)]) == 0
    table = capsys.readouterr().out
    assert "NLL [nats/token]" in table.splitlines()[0] and model in table and "| lm |" in table


def test_a_recurrent_option_is_refused_in_one_line(capsys):
    for model, flag in (("tcn-lm", ["--cell", "lstm"]), ("gcnn-lm", ["--bptt", "35"])):
        assert main(["train", "--model", model, "--data", "ptb-char", *flag]) == 2
        err = capsys.readouterr().err.strip()
        assert f"{flag[0]} is not an option of the {model} model" in err
        assert len(err.splitlines()) == 1
    assert main(["train", "--model", "tcn-lm", "--seq-len", "10", "--context-len", "10"]) == 2
    assert "context_len must be below seq_len" in capsys.readouterr().err


@pytest.mark.parametrize("model, options", [("tcn-lm", []),
                                            ("gcnn-lm", ["--untied", "--bottleneck"])])  # fmt: skip
def test_a_resumed_run_is_bit_exact(tmp_path, capsys, model, options):
    data = _corpus_dir(tmp_path / "corpus")
    argv = ["train", "--model", model, "--data", "toy", "--data-dir", str(data), *SMALL,
            "--optimizer", "adam", "--lr", "0.01", "--dropout", "0.2", *options]  # fmt: skip
    assert main([*argv, "--epochs", "3", "--out", str(tmp_path / "whole")]) == 0
    assert main([*argv, "--epochs", "2", "--out", str(tmp_path / "split")]) == 0
    assert main(["train", "--out", str(tmp_path / "split"), "--resume", "--epochs", "3",
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert rows(tmp_path / "split") == rows(tmp_path / "whole")
    result = json.loads((tmp_path / "split" / "result.json").read_text())
    config = json.loads((tmp_path / "split" / "config.json").read_text())["config"]
    assert config.get("untied", False) == ("--untied" in options)
    assert main(["eval", str(tmp_path / "split"), "--split", "test"]) == 0
    assert f"test: ppl {result['test_ppl']:.3f}" in capsys.readouterr().out
