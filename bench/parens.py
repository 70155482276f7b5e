"""Balanced parentheses with the state-regularised LSTM (Wang & Niepert 2019, section 5.2;
issue 18).

Strings over '(' ')' and the letters a-z; accept iff the parentheses are balanced (no prefix
closes more than it opened, and all are closed). Trains an ``sr-lstm`` (SR-LSTM-P), an ``sr-gru``
and a plain ``lstm`` and ``gru`` of the same width on strings of nesting depth 1 to
--train-depth and length up to --train-len, then tests each on two sets it never saw:

- deeper: depth --train-depth + 1 to 2 --train-depth, length up to 2 --train-len (the paper's
  test: it trains on depth 1-5 and tests on depth 6-10, lengths up to 100);
- longer: depth 1 to --train-depth, length --train-len + 1 to 4 --train-len.

Negatives are, half each, the authors' kind (a positive with about half its symbols replaced
by random ones, kept where the counts of '(' and ')' differ) and one that counting alone cannot
reject (a '(' swapped with a later ')' so that a prefix closes too many; the counts stay
equal). The data are drawn from ``random.Random(seed)``: the same seed, the same strings.

For each state-regularised model the automaton is extracted as for Tomita
(``rnnlab.cells.srgru.extract_automaton``: each step's most probable centroid, the most
frequent target per state and symbol), printed with the letters merged where they agree, and
run on the test sets; the prefix depth -> most probable centroid table shows which centroids
count. A finite automaton counts only to a bound: with the SR-LSTM the count may live in the
cell state, which the automaton over centroids does not see. It measures; it asserts nothing.

    python bench/parens.py [--steps 3000 --hidden 10 --centroids 5 --cells sr-lstm,sr-gru,lstm,gru]
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter

import torch
from torch import nn

from rnnlab import Recurrent
from rnnlab.cells.srgru import StateRegularised, extract_automaton

LETTERS = "abcdefghijklmnopqrstuvwxyz"
ALPHABET = "#" + LETTERS + "()"  # '#' the start symbol, as the authors'
INDEX = {c: i for i, c in enumerate(ALPHABET)}


# --- the language and its data --------------------------------------------------------------
def depths(s: str) -> list[int]:
    """The nesting depth after each symbol."""
    d, out = 0, []
    for c in s:
        d += (c == "(") - (c == ")")
        out.append(d)
    return out


def balanced(s: str) -> bool:
    d = depths(s)
    return not d or (min(d) >= 0 and d[-1] == 0)


def max_depth(s: str) -> int:
    return max(depths(s), default=0)


def positive(rng: random.Random, length: int, depth: range) -> str | None:
    """A balanced string of exactly ``length`` symbols whose maximal depth lies in ``depth``,
    or None where 100 draws found none. Left to right: open, close or a letter, among the moves
    that can still end balanced within the length, opening more often until the drawn target
    depth is reached."""
    for _ in range(100):
        target = rng.choice(depth)
        s, d, deepest = [], 0, 0
        for r in range(length, 0, -1):  # r: symbols still to place, this one included
            moves = []
            if d < target and r - 1 >= d + 1:
                moves += ["("] * (3 if deepest < target else 1)
            if d > 0:
                moves += [")"] * (1 if deepest < target and r - 1 > d else 2)
            if r - 1 >= d:
                moves += ["x"] * 2
            move = rng.choice(moves)
            if move == "x":
                move = rng.choice(LETTERS)
            d += (move == "(") - (move == ")")
            deepest = max(deepest, d)
            s.append(move)
        text = "".join(s)
        if balanced(text) and max_depth(text) in depth:
            return text
    return None


def corrupted(rng: random.Random, s: str) -> str | None:
    """The authors' negative: each symbol replaced by a random one with probability 1/2; kept
    where the counts of '(' and ')' differ."""
    for _ in range(20):
        t = "".join(rng.choice(LETTERS + "()") if rng.random() < 0.5 else c for c in s)
        if t.count("(") != t.count(")"):
            return t
    return None


def swapped(rng: random.Random, s: str) -> str | None:
    """A negative with equal counts: a '(' swapped with a later ')' so that some prefix closes
    more than it opened."""
    opens = [i for i, c in enumerate(s) if c == "("]
    for _ in range(20):
        if not opens:
            return None
        i = rng.choice(opens)
        closes = [j for j in range(i + 1, len(s)) if s[j] == ")"]
        j = rng.choice(closes)
        t = s[:i] + ")" + s[i + 1 : j] + "(" + s[j + 1 :]
        if not balanced(t):
            return t
    return None


def dataset(count: int, lengths: range, depth: range, seed: int) -> list[tuple[str, int]]:
    """``count`` strings, half balanced, a quarter of each kind of negative; deterministic in
    ``seed``."""
    rng = random.Random(seed)
    data: list[tuple[str, int]] = []
    while len(data) < count:
        s = positive(rng, rng.choice(lengths), depth)
        if s is None:
            continue
        kind = len(data) % 4
        t = s if kind < 2 else corrupted(rng, s) if kind == 2 else swapped(rng, s)
        if t is not None:
            data.append((t, int(balanced(t))))
    return data


def encode(strings: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot (T, B, |alphabet|) with the start symbol first, and lengths."""
    T = max(len(s) for s in strings) + 1
    x = torch.zeros(T, len(strings), len(ALPHABET))
    for b, s in enumerate(strings):
        for t, c in enumerate("#" + s):
            x[t, b, INDEX[c]] = 1.0
    return x, torch.tensor([len(s) + 1 for s in strings])


# --- the models ---------------------------------------------------------------------------
class Acceptor(nn.Module):
    """A recurrent layer and a linear read-out of its last state: accept or reject."""

    def __init__(self, cell: str, hidden: int, cell_args: dict | None) -> None:
        super().__init__()
        self.rnn = Recurrent(cell, len(ALPHABET), hidden, cell_args=cell_args)
        self.out = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        _, state = self.rnn(x, lengths)
        return self.out(state[0][-1])


def accuracy(model: nn.Module, data: list[tuple[str, int]]) -> float:
    model.eval()
    right = 0
    with torch.no_grad():
        for k in range(0, len(data), 256):
            chunk = data[k : k + 256]
            x, lengths = encode([s for s, _ in chunk])
            guess = model(x, lengths).argmax(-1)
            right += int((guess == torch.tensor([y for _, y in chunk])).sum())
    model.train()
    return right / len(data)


def train(model: nn.Module, data: list[tuple[str, int]], steps: int, lr: float, seed: int) -> None:
    """RMSprop as the authors, batches of 32; a length curriculum over the first half of the
    updates (strings up to a length growing from a fifth of the longest to all), as theirs
    grows the length epoch by epoch."""
    rng = random.Random(seed)
    opt = torch.optim.RMSprop(model.parameters(), lr=lr)
    by_length = sorted(data, key=lambda d: len(d[0]))
    for step in range(steps):
        reach = min(1.0, 0.2 + 0.8 * step / max(1, steps // 2))
        pool = by_length[: max(32, int(reach * len(by_length)))]
        batch = rng.sample(pool, 32)
        x, lengths = encode([s for s, _ in batch])
        target = torch.tensor([y for _, y in batch])
        loss = nn.functional.cross_entropy(model(x, lengths), target)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()


# --- the automaton --------------------------------------------------------------------------
def symbol_name(i: int) -> str:
    return ALPHABET[i]


def print_automaton(start: int, transitions: dict[tuple[int, int], int], accepts: set[int]) -> None:
    """One line per state: its targets under '(' and ')' and under the letters (merged where
    they agree, else the most common target and how many letters go elsewhere)."""
    states = sorted({start} | {s for s, _ in transitions} | set(transitions.values()))
    print(f"  {len(states)} states, start {start}, accepting {sorted(accepts)}")
    for state in states:
        parts = []
        for sym in "()":
            target = transitions.get((state, INDEX[sym]))
            parts.append(f"{sym} -> {'-' if target is None else target}")
        letters = Counter(
            transitions[(state, INDEX[c])] for c in LETTERS if (state, INDEX[c]) in transitions
        )
        if letters:
            target, n = letters.most_common(1)[0]
            others = sum(letters.values()) - n
            parts.append(f"a-z -> {target}" + (f" ({others} letters elsewhere)" if others else ""))
        print(f"  state {state}{' (accept)' if state in accepts else ''}: " + ", ".join(parts))


def run_automaton(
    start: int, transitions: dict[tuple[int, int], int], accepts: set[int], s: str
) -> int:
    state = start
    for c in s:
        state = transitions.get((state, INDEX[c]), -1)
        if state < 0:
            return 0
    return int(state in accepts)


def depth_table(cell: StateRegularised, strings: list[str]) -> dict[int, Counter]:
    """For each prefix depth, how often each centroid is the most probable one there."""
    table: dict[int, Counter] = {}
    with torch.no_grad():
        for s in strings:
            x, _ = encode([s])
            states = cell.transition_probabilities(x)[:, 0].argmax(-1).tolist()
            for d, state in zip([0, *depths(s)], states, strict=True):
                table.setdefault(d, Counter())[state] += 1
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", default="sr-lstm,sr-gru,lstm,gru")
    parser.add_argument("--train-depth", type=int, default=5)
    parser.add_argument("--train-len", type=int, default=50)
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--hidden", type=int, default=10)
    parser.add_argument("--centroids", type=int, default=5)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    D, L = args.train_depth, args.train_len
    train_set = dataset(args.train_size, range(2, L + 1), range(1, D + 1), args.seed)
    tests = {
        f"deeper (depth {D + 1}-{2 * D}, length <= {2 * L})": dataset(
            args.test_size, range(2 * D + 2, 2 * L + 1), range(D + 1, 2 * D + 1), 1000 + args.seed
        ),
        f"longer (depth 1-{D}, length {L + 1}-{4 * L})": dataset(
            args.test_size, range(L + 1, 4 * L + 1), range(1, D + 1), 2000 + args.seed
        ),
    }
    print(f"balanced parentheses: {len(train_set)} training strings, depth 1-{D}, length 2-{L}; "
          f"{args.steps} updates of 32, RMSprop {args.lr}, seed {args.seed}")  # fmt: skip
    for cell in args.cells.split(","):
        torch.manual_seed(args.seed)
        sr = cell.startswith("sr-")
        cell_args = {"centroids": args.centroids, "temperature": args.temperature} if sr else None
        model = Acceptor(cell, args.hidden, cell_args)
        params = sum(p.numel() for p in model.parameters())
        began = time.perf_counter()
        train(model, train_set, args.steps, args.lr, args.seed)
        wall = time.perf_counter() - began
        line = f"{cell} ({params} parameters, {wall:.0f} s): train {accuracy(model, train_set):.4f}"
        for name, data in tests.items():
            line += f"; {name} {accuracy(model, data):.4f}"
        print(line, flush=True)
        if not sr:
            continue
        rnn_cell = model.rnn.layer_cells[0]
        assert isinstance(rnn_cell, StateRegularised)
        with torch.no_grad():
            accepting = model.out(rnn_cell.centroids).argmax(-1) == 1
        sequences = [encode([s])[0][:, 0] for s, _ in train_set[:500]]
        start, transitions, accepts = extract_automaton(rnn_cell, sequences, accepting)
        print(f"  extracted automaton of {cell}:")
        print_automaton(start, transitions, accepts)
        for name, data in tests.items():
            right = sum(run_automaton(start, transitions, accepts, s) == y for s, y in data)
            print(f"  the automaton on {name}: accuracy {right / len(data):.4f}")
        table = depth_table(rnn_cell, [s for s, y in train_set[:300] if y])
        print("  prefix depth: most probable centroid (count) on balanced training strings")
        for d in sorted(table):
            print(f"    {d}: " + ", ".join(f"{s} ({n})" for s, n in table[d].most_common(3)))


if __name__ == "__main__":
    main()
