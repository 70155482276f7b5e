"""The predictor and the NLL metric exactly as Boulanger-Lewandowski et al. 2012 define it."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnlab.data import to_tensors
from rnnlab.errors import ConfigError
from rnnlab.metrics import evaluate_nll
from rnnlab.models import ModelConfig, RNNPredictor


@torch.no_grad()
def _log_prob_by_hand(model, piece):
    """log p(piece) step by step: frame t is predicted from frames < t, the first from zeros."""
    x = torch.as_tensor(piece, dtype=torch.float64)
    total = 0.0
    prev = torch.zeros(1, 1, 88, dtype=torch.float64)
    state = None
    for t in range(len(x)):
        h, state = model.rnn(prev, state=state)
        logits = model.head.proj(h[0, 0])
        total += float(-F.binary_cross_entropy_with_logits(logits, x[t], reduction="sum"))
        prev = x[t].view(1, 1, 88)
    return total


def test_nll_counts_every_frame_once():
    torch.manual_seed(0)
    model = RNNPredictor(ModelConfig(cell="lstm-v", hidden_size=8)).double().eval()
    rng = np.random.default_rng(0)
    pieces = [rng.random((n, 88)) < 0.1 for n in (3, 11, 1, 7)]
    by_hand = [_log_prob_by_hand(model, p) for p in pieces]
    expected = -sum(by_hand) / sum(len(p) for p in pieces)  # per frame, not per sequence
    result = evaluate_nll(model, to_tensors(pieces, torch.float64), batch_size=3)
    assert result.frames == 22
    assert result.nll == pytest.approx(expected, rel=1e-12)
    per_sequence = -np.mean([lp / len(p) for lp, p in zip(by_hand, pieces, strict=True)])
    assert not math.isclose(result.nll, per_sequence, rel_tol=1e-6)


def test_untrained_bias_only_model_has_the_closed_form_nll():
    """With zero weights the model predicts p = 0.5 for every key: NLL = 88 ln 2 per frame."""
    model = RNNPredictor(ModelConfig(cell="gru", hidden_size=4))
    with torch.no_grad():
        model.head.proj.weight.zero_()
        model.head.proj.bias.zero_()
    pieces = to_tensors([np.zeros((5, 88), dtype=bool), np.ones((2, 88), dtype=bool)])
    assert evaluate_nll(model, pieces).nll == pytest.approx(88 * math.log(2), rel=1e-6)


def test_sampling_shape_and_values():
    model = RNNPredictor(ModelConfig(cell="tanh", hidden_size=8))
    frames = model.sample(10, batch_size=2, generator=torch.Generator().manual_seed(0))
    assert frames.shape == (2, 10, 88)
    assert set(frames.unique().tolist()) <= {0.0, 1.0}


def test_model_config_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="hiden_size"):
        ModelConfig.from_dict({"hiden_size": 3})
