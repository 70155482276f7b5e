"""Speech for the CTC recognisers: utterances, log-mel filterbank features, phone inventories
and the error rate by edit distance.

An utterance is mono audio (float32 in [-1, 1]) at a sample rate, the phone sequence spoken, and
the speaker who spoke it (splits are speaker-disjoint). Two corpora produce them: TIMIT read from
its own layout (``rnnlab.data.timit``) and a corpus synthesised by espeak-ng
(``rnnlab.data.synth_speech``).

Features are computed here, not by a library: log-mel filterbank energies,

    X_t = |FFT(w * x[t*hop : t*hop + win])|^2        power spectrum of frame t (Hann window w)
    M_t = F X_t                                      F: (n_mels, n_fft/2 + 1) triangular filters
    f_t = log(M_t + eps)

with the filters' centres equally spaced on the HTK mel scale m(f) = 2595 log10(1 + f / 700)
between ``low_hz`` and ``high_hz`` (Young et al., the HTK book, section 5.4; the "fbank" features
of Graves et al. 2013 are 40 such energies plus the frame's log energy).

The error rate of a recogniser is the edit distance (substitutions, deletions, insertions, each
costing 1) between its output and the reference, summed over a set and divided by the reference
phones: phone error rate (PER).

>>> edit_distance([1, 2, 3], [1, 3, 4])
2
>>> round(error_rate([[1, 2, 3]], [[1, 3]]), 3)
0.5
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SPEECH_EPS = 1e-6  # the floor inside the log of the filterbank energies


@dataclass(frozen=True)
class Utterance:
    """One spoken sentence: ``audio`` float32 (n,) in [-1, 1] at ``rate`` Hz, the ``phones``
    spoken, in order, its ``speaker`` and a ``name`` unique within its corpus."""

    name: str
    speaker: str
    audio: np.ndarray
    rate: int
    phones: tuple[str, ...]
    text: str = ""


# --- features --------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel filterbank settings: ``n_mels`` filters over [``low_hz``, ``high_hz``] (0: the
    Nyquist frequency), frames of ``win_ms`` every ``hop_ms``; ``log_energy`` appends the log of
    each frame's energy (Graves et al. 2013's 41st coefficient)."""

    n_mels: int = 40
    win_ms: float = 25.0
    hop_ms: float = 10.0
    low_hz: float = 0.0
    high_hz: float = 0.0
    log_energy: bool = True

    @property
    def size(self) -> int:
        return self.n_mels + int(self.log_energy)


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, rate: int, low_hz: float = 0.0,
                   high_hz: float = 0.0) -> np.ndarray:  # fmt: skip
    """(n_mels, n_fft // 2 + 1) triangular filters: filter i rises from the mel-spaced point i to
    1 at point i + 1 and falls to 0 at point i + 2 (n_mels + 2 points from ``low_hz`` to
    ``high_hz``), evaluated at the FFT bins' frequencies (no bin-rounding of the edges)."""
    high_hz = high_hz or rate / 2
    if not 0 <= low_hz < high_hz <= rate / 2:
        raise ValueError(f"need 0 <= low_hz < high_hz <= {rate / 2}, got {low_hz}, {high_hz}")
    edges = mel_to_hz(np.linspace(hz_to_mel(low_hz), hz_to_mel(high_hz), n_mels + 2))
    bins = np.arange(n_fft // 2 + 1) * rate / n_fft  # (n_bins,) Hz
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - left) / (centre - left)
    falling = (right - bins) / (right - centre)
    return np.clip(np.minimum(rising, falling), 0.0, None)


def frame_count(n_samples: int, rate: int, cfg: FeatureConfig) -> int:
    win, hop = _win_hop(rate, cfg)
    return 0 if n_samples < win else 1 + (n_samples - win) // hop


def _win_hop(rate: int, cfg: FeatureConfig) -> tuple[int, int]:
    return round(rate * cfg.win_ms / 1000), round(rate * cfg.hop_ms / 1000)


def log_mel(audio: np.ndarray, rate: int, cfg: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """(frames, cfg.size) float32 features of mono ``audio`` (see the module docstring). The FFT
    length is the window's rounded up to a power of two; frames that would run past the end are
    dropped (a clip shorter than one window has no frames)."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"audio must be mono (n,), got shape {x.shape}")
    win, hop = _win_hop(rate, cfg)
    n_fft = 1 << max(0, math.ceil(math.log2(win)))
    frames = frame_count(len(x), rate, cfg)
    if frames == 0:
        return np.zeros((0, cfg.size), dtype=np.float32)
    index = np.arange(win)[None, :] + hop * np.arange(frames)[:, None]  # (frames, win)
    window = np.hanning(win)
    power = np.abs(np.fft.rfft(x[index] * window, n=n_fft, axis=1)) ** 2  # (frames, n_bins)
    filters = mel_filterbank(cfg.n_mels, n_fft, rate, cfg.low_hz, cfg.high_hz)
    feats = np.log(power @ filters.T + SPEECH_EPS)
    if cfg.log_energy:
        energy = np.log(np.sum(x[index] ** 2, axis=1) + SPEECH_EPS)[:, None]
        feats = np.concatenate([feats, energy], axis=1)
    return feats.astype(np.float32)


# --- scoring ---------------------------------------------------------------------------------
def edit_distance(hyp: Sequence[object], ref: Sequence[object]) -> int:
    """Levenshtein distance (unit costs). One row of the dynamic programme at a time, the
    insertions' left-to-right dependency resolved by a running minimum:
    d[j] = min_k<=j (c[k] + j - k), computed as cummin(c - j) + j."""
    if len(ref) == 0:
        return len(hyp)
    if len(hyp) == 0:
        return len(ref)
    symbols = {s: i for i, s in enumerate(dict.fromkeys([*hyp, *ref]))}
    h = np.array([symbols[s] for s in hyp])
    r = np.array([symbols[s] for s in ref])
    j = np.arange(len(r) + 1)
    row = j.copy()  # distance of the empty hypothesis prefix to ref[:j]
    for i, s in enumerate(h, start=1):
        candidate = np.empty_like(row)
        candidate[0] = i
        # substitution (or match) from row[j-1], deletion of s from row[j]
        candidate[1:] = np.minimum(row[:-1] + (r != s), row[1:] + 1)
        row = np.minimum.accumulate(candidate - j) + j
    return int(row[-1])


def error_rate(hyps: Sequence[Sequence[object]], refs: Sequence[Sequence[object]]) -> float:
    """Summed edit distance over summed reference length (PER for phones)."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references")
    total = sum(len(r) for r in refs)
    if total == 0:
        raise ValueError("the references hold no symbols")
    return sum(edit_distance(h, r) for h, r in zip(hyps, refs, strict=True)) / total
