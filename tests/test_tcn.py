"""The TCN (Bai et al. 2018) and its music family: causality, the receptive field, finite
differences of a block, sampling over the receptive field, padding, learning, the refusals."""

import pytest
import torch

from rnnlab.cli import main
from rnnlab.models.tcn import TCNConfig, TCNPredictor, TemporalBlock, receptive_field


def _model(levels=3, kernel=3, hidden=16, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    config = TCNConfig(hidden_size=hidden, num_layers=levels, kernel_size=kernel, dropout=0.0)
    return TCNPredictor(config).to(dtype).eval()


def _rolls(batch, frames, seed=1, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, frames, 88, generator=generator) < 0.1).to(dtype)


@pytest.mark.parametrize("t", [0, 1, 7, 29])
def test_the_prediction_of_frame_t_ignores_frames_from_t_on(t):
    model, x = _model(), _rolls(2, 30)
    lengths = torch.tensor([30, 30])
    changed = x.clone()
    changed[:, t:] = 1.0 - changed[:, t:]
    before, after = model(x, lengths).log_prob, model(changed, lengths).log_prob
    torch.testing.assert_close(after[:, :t], before[:, :t], rtol=0, atol=0)
    # the logits of frame t (what predicts it) are unchanged too; its log-probability is not,
    # since x_t is its target
    shift = torch.cat([torch.zeros(2, 1, 88, dtype=x.dtype), x[:, :-1]], dim=1)
    shift_changed = torch.cat([torch.zeros(2, 1, 88, dtype=x.dtype), changed[:, :-1]], dim=1)
    h, h_changed = model.features(shift)[:, t], model.features(shift_changed)[:, t]
    torch.testing.assert_close(h_changed, h, rtol=0, atol=0)
    assert not torch.equal(after[:, t], before[:, t])


def test_a_frame_is_predicted_from_the_frame_before_it():
    """The causality test above can fail: changing frame t - 1 changes frame t's prediction."""
    model, x = _model(), _rolls(1, 10)
    changed = x.clone()
    changed[:, 4] = 1.0 - changed[:, 4]
    before, after = (model(v, torch.tensor([10])).log_prob for v in (x, changed))
    assert not torch.equal(after[:, 5], before[:, 5])


@pytest.mark.parametrize(("levels", "kernel"), [(1, 2), (2, 3), (3, 3), (4, 5)])
def test_the_receptive_field_is_what_the_gradient_reaches(levels, kernel):
    """d h_T / d inputs is nonzero on exactly the last 1 + 2 (k-1) (2^levels - 1) frames."""
    R = receptive_field(levels, kernel)
    assert 1 + 2 * (kernel - 1) * (2**levels - 1) == R
    model = _model(levels, kernel, hidden=32)
    T = R + 10
    inputs = torch.randn(1, T, 88, dtype=torch.float64, requires_grad=True)
    model.features(inputs)[0, -1].sum().backward()
    reached = inputs.grad[0].abs().sum(-1) > 0  # (T,)
    assert reached[T - R :].all() and not reached[: T - R].any()
    assert model.receptive_field == R


@pytest.mark.parametrize(("c_in", "c_out"), [(2, 3), (3, 3)])
def test_a_residual_block_passes_gradcheck(c_in, c_out):
    torch.manual_seed(0)
    block = TemporalBlock(c_in, c_out, kernel_size=2, dilation=2, dropout=0.0).double()
    assert (block.downsample is not None) == (c_in != c_out)
    for p in block.parameters():  # away from the ReLUs' kinks: weights of order one
        p.data.normal_(0.0, 0.5)
    x = torch.randn(1, c_in, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,), eps=1e-6, atol=1e-5)
    params = tuple(block.parameters())

    def of_params(*values):
        names = [n for n, _ in block.named_parameters()]
        state = dict(zip(names, values, strict=True))
        return torch.func.functional_call(block, state, (x.detach(),))

    assert torch.autograd.gradcheck(of_params, params, eps=1e-6, atol=1e-5)


def test_sampling_over_the_receptive_field_equals_the_whole_history():
    model = _model(levels=2, kernel=3)
    R, T = model.receptive_field, 40
    inputs = torch.cat([torch.zeros(1, 1, 88, dtype=torch.float64), _rolls(1, T - 1)], dim=1)
    whole = model.features(inputs)
    for t in (3, R - 1, R, T - 1):
        window = model.features(inputs[:, max(0, t + 1 - R) : t + 1])[:, -1]
        torch.testing.assert_close(window, whole[:, t], rtol=0, atol=1e-12)


def test_samples_are_seeded_frames_of_keys():
    model = _model(dtype=torch.float32)
    draw = lambda seed: model.sample(9, 2, torch.Generator().manual_seed(seed))  # noqa: E731
    a = draw(3)
    assert a.shape == (2, 9, 88) and set(a.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(a, draw(3)) and not torch.equal(a, draw(4))


def test_padding_never_reaches_a_shorter_piece():
    model, x = _model(), _rolls(2, 12)
    lengths = torch.tensor([12, 7])
    padded = x.clone()
    padded[1, 7:] = 1.0  # garbage after the end
    batch = model(padded, lengths)
    alone = model(x[1:, :7], torch.tensor([7]))
    torch.testing.assert_close(batch.log_prob[1, :7], alone.log_prob[0])
    assert batch.num_frames == 19 and torch.all(batch.log_prob[1, 7:] == 0)


def test_it_learns_a_two_frame_pattern():
    """Alternating chords: the NLL per frame falls well below its start (the net predicts)."""
    model = _model(levels=2, kernel=2, dtype=torch.float32)
    x = torch.zeros(4, 20, 88)
    x[:, 0::2, [40, 44, 47]] = 1.0
    x[:, 1::2, [45, 49, 52]] = 1.0
    lengths = torch.full((4,), 20)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    model.train()
    start = float(model(x, lengths).nll_per_frame.detach())
    for _ in range(60):
        optimizer.zero_grad()
        loss = model(x, lengths).nll_per_frame
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.1 * start and float(loss.detach()) < 1.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cell", "lstm"], "--cell is not an option of the tcn model"),
        (["--layer-norm"], "--layer-norm is not an option of the tcn model"),
        (["--zoneout", "0.1"], "--zoneout is not an option of the tcn model"),
        (["--recurrent-dropout", "0.1"], "--recurrent-dropout is not an option of the tcn"),
        (["--backend", "fused"], "--backend is not an option of the tcn model"),
        (["--window", "8"], "--window is not an option of the tcn model"),
        (["--kernel-size", "1"], "kernel_size must be at least 2, got 1"),
        (["--num-layers", "0"], "num_layers must be positive, got 0"),
        (["--dropout", "1"], "dropout must be below 1.0"),
        (["--data", "adding"], "--model tcn cannot train on --data 'adding'"),
    ],
)
def test_what_a_tcn_cannot_honour_is_refused_in_one_line(argv, message, capsys):
    assert main(["train", "--model", "tcn", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_tcn_and_an_lstm_are_compared_on_the_same_metric(tiny_npz, tmp_path, capsys):
    runs = []
    for argv in (["--model", "tcn", "--hidden-size", "8", "--num-layers", "2"],
                 ["--cell", "lstm", "--hidden-size", "8"]):  # fmt: skip
        runs.append(tmp_path / argv[1])
        assert main(["train", "--data", str(tiny_npz), *argv, "--epochs", "2", "--out",
                     str(runs[-1]), "--no-progress", "--threads", "1"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["compare", *map(str, runs)]) == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0]
    assert header.count("NLL [nats/frame]") == 2  # one valid, one test column: shared
    rows = [line for line in table.splitlines() if "| tcn |" in line or "| rnn |" in line]
    assert len(rows) == 2 and "| tcn |" in rows[0] and "| lstm |" in rows[1]
