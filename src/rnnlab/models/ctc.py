"""A deep bidirectional recurrent recogniser trained with connectionist temporal classification
(CTC; Graves et al. 2006), as in Graves, Mohamed & Hinton 2013 ("Speech recognition with deep
recurrent neural networks", the CTC networks of their Table 1).

Input: feature frames f_1..f_T (log-mel filterbanks, ``rnnlab.data.speech``), normalised by the
training set's mean and deviation per coefficient; ``stride`` s > 1 stacks s consecutive frames
into one step (T / s steps of s times the width: fewer steps to run, as in Deep Speech 2's
strided input). A stack of bidirectional recurrent layers of any cell gives h_t (2H units), and

    p(k | t) = softmax(W h_t + b)_k,     k in {blank, phone_1, ..., phone_K}

(blank is class 0). CTC sums over every alignment a (one label or blank per step) that collapses
to the target z by removing repeats and then blanks, B(a) = z:

    -log p(z | f) = -log sum_{a : B(a) = z} prod_t p(a_t | t),

computed by torch's ``ctc_loss`` (the forward-backward recursion of Graves et al. 2006, Sec. 4.1).
Decoding: greedy (the best class per step, collapsed) or the CTC prefix beam search (Hannun et
al. 2014, "First-pass large vocabulary continuous speech recognition using bi-directional
recurrent DNNs", Algorithm 1, without a language model): each prefix keeps the probability of
ending in a blank and of ending in its last label, so that alignments collapsing to the same
prefix are summed, not competed.

>>> import torch
>>> from rnnlab.models.rnn import ModelConfig
>>> model = CTCRecognizer(ModelConfig(model="ctc", cell="gru", hidden_size=8, dropout=0.0,
...                       bidirectional=True), input_size=41, num_phones=5, stride=2)
>>> log_probs, steps = model(torch.zeros(2, 9, 41), torch.tensor([9, 4]))
>>> tuple(log_probs.shape), steps.tolist()
((2, 5, 6), [5, 2])
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.models.rnn import ModelConfig, make_recurrent

BLANK = 0


def stack_frames(x: Tensor, lengths: Tensor, stride: int) -> tuple[Tensor, Tensor]:
    """(B, T, D) frames to (B, ceil(T / s), s D): step j holds frames j s .. j s + s - 1 (the
    last step zero-padded); a sequence of n frames has ceil(n / s) steps."""
    if stride == 1:
        return x, lengths
    B, T, D = x.shape
    pad = (-T) % stride
    x = F.pad(x, (0, 0, 0, pad))
    return x.reshape(B, (T + pad) // stride, stride * D), torch.div(
        lengths + stride - 1, stride, rounding_mode="floor"
    )


class CTCRecognizer(nn.Module):
    """Bidirectional recurrent stack + softmax over the phones and a blank (see the module
    docstring). ``forward(x, lengths)`` -> (log-probabilities (B, T', K + 1), steps (B,))."""

    feature_mean: Tensor  # (F,) buffers: the training features' statistics
    feature_std: Tensor

    def __init__(self, config: ModelConfig, input_size: int, num_phones: int,
                 stride: int = 1) -> None:  # fmt: skip
        super().__init__()
        self.config, self.stride, self.num_phones = config, stride, num_phones
        self.rnn = make_recurrent(config, input_size * stride)
        width = config.hidden_size * (2 if config.bidirectional else 1)
        self.drop = nn.Dropout(config.dropout)
        self.out = nn.Linear(width, num_phones + 1)
        self.register_buffer("feature_mean", torch.zeros(input_size))
        self.register_buffer("feature_std", torch.ones(input_size))

    def set_normalisation(self, mean: Tensor, std: Tensor) -> None:
        """Features are standardised by these (the training set's, per coefficient)."""
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp_min(1e-5))

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = (x - self.feature_mean) / self.feature_std
        x = x * (torch.arange(x.shape[1], device=x.device)[None, :, None]
                 < lengths.to(x.device)[:, None, None])  # padding stays zero  # fmt: skip
        x, steps = stack_frames(x, lengths, self.stride)
        h, _ = self.rnn(x, lengths=steps)  # (B, T', D H)
        return F.log_softmax(self.out(self.drop(h)), dim=-1), steps

    def ctc_loss(self, log_probs: Tensor, steps: Tensor, targets: Tensor,
                 target_lengths: Tensor) -> Tensor:  # fmt: skip
        """-log p(z | f) summed over the batch, from ``forward``'s output. ``targets``: (B, S)
        phone ids from 1 (0 is the blank), padded. An utterance with fewer steps than its
        alignment needs (its labels plus one blank between each repeated pair) has probability
        0: it is refused in one line rather than made an infinite or zeroed term."""
        repeats = (targets[:, 1:] == targets[:, :-1]) & (
            torch.arange(targets.shape[1] - 1, device=targets.device)[None, :]
            < (target_lengths[:, None] - 1)
        )
        need = (target_lengths + repeats.sum(1)).cpu()
        short = steps.cpu() < need
        if bool(short.any()):
            worst = int(torch.argmax((need - steps.cpu()).float()))
            raise ValueError(
                f"an utterance has {int(steps[worst])} steps for {int(target_lengths[worst])} "
                f"phones needing {int(need[worst])}: use a smaller --stride"
            )
        return F.ctc_loss(log_probs.transpose(0, 1), targets, steps, target_lengths,
                          blank=BLANK, reduction="sum")  # fmt: skip


def greedy_decode(log_probs: Tensor, steps: Tensor) -> list[list[int]]:
    """The best class per step, repeats merged, blanks removed (best path decoding)."""
    best = log_probs.argmax(-1).cpu().numpy()
    out = []
    for row, n in zip(best, steps.tolist(), strict=True):
        path = row[:n]
        keep = np.ones(len(path), dtype=bool)
        keep[1:] = path[1:] != path[:-1]
        out.append([int(k) for k in path[keep] if k != BLANK])
    return out


def _logsumexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    hi = max(a, b)
    return hi + math.log1p(math.exp(-abs(a - b)))


def beam_decode(log_probs: Tensor, steps: Tensor, beam: int = 8,
                prune: float = math.log(1e-3)) -> list[list[int]]:  # fmt: skip
    """CTC prefix beam search (Hannun et al. 2014, no language model): after each step, the
    ``beam`` prefixes of highest p_blank + p_label survive; at each step only the ``beam`` most
    probable classes, and of those only the ones above exp(``prune``), extend them (the best
    class always does)."""
    lp = log_probs.detach().float().cpu().numpy()
    results = []
    for u, n in enumerate(steps.tolist()):
        # prefix -> (log p ending in blank, log p ending in its last label)
        beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}
        for t in range(n):
            row = lp[u, t]
            top = np.argsort(row)[::-1][:beam]  # at most ``beam`` classes extend a prefix
            classes = top[row[top] >= min(prune, float(row[top[0]]))]
            nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
            for prefix, (p_b, p_l) in beams.items():
                total = _logsumexp(p_b, p_l)
                last = prefix[-1] if prefix else None
                for c in classes:
                    k, p = int(c), float(row[c])
                    if k == BLANK:
                        entry = nxt[prefix]
                        entry[0] = _logsumexp(entry[0], total + p)
                        continue
                    extended = nxt[(*prefix, k)]
                    if k == last:  # a repeat extends only across a blank; else it stays put
                        extended[1] = _logsumexp(extended[1], p_b + p)
                        same = nxt[prefix]
                        same[1] = _logsumexp(same[1], p_l + p)
                    else:
                        extended[1] = _logsumexp(extended[1], total + p)
            ranked = sorted(nxt.items(), key=lambda kv: -_logsumexp(kv[1][0], kv[1][1]))
            beams = {prefix: (v[0], v[1]) for prefix, v in ranked[:beam]}
        best = max(beams.items(), key=lambda kv: _logsumexp(kv[1][0], kv[1][1]))[0]
        results.append(list(best))
    return results
