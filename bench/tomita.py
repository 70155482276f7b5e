"""Tomita grammars with the state-regularised GRU (Wang & Niepert 2019; issue 18).

Trains an ``sr-gru`` and a ``gru`` of the same width to accept or reject binary strings of
length 1 to --train-len (half of them in the language), tests both on strings of length
--train-len + 1 to --test-len (longer than any trained on), then extracts the SR-GRU's finite
automaton (``rnnlab.cells.srgru.extract_automaton``), prints it, and runs it on the long test
strings. Strings start with a start symbol, as the authors'. It measures; it asserts nothing.

    python bench/tomita.py --grammar 4 [--train-len 10 --test-len 40 --steps 1500 --temperature 1
                                        --lr 1e-2 --batch-size 32 --curriculum]
"""

from __future__ import annotations

import argparse
import random
import re

import torch
from torch import nn

from rnnlab import Recurrent
from rnnlab.cells.srgru import extract_automaton

GRAMMARS = {  # Tomita (1982): membership of a string over {0, 1}
    1: lambda s: "0" not in s,  # 1*
    2: lambda s: re.fullmatch("(10)*", s) is not None,
    4: lambda s: "000" not in s,
    5: lambda s: s.count("0") % 2 == 0 and s.count("1") % 2 == 0,
    6: lambda s: (s.count("0") - s.count("1")) % 3 == 0,
    7: lambda s: re.fullmatch("0*1*0*1*", s) is not None,
}
START = 2  # the start symbol's index; 0 and 1 are the string's


def positive(grammar: int, n: int, rng: random.Random) -> str | None:
    """A string of length n in the language, drawn directly where random strings rarely are;
    None where 200 draws found none."""
    if grammar == 1:
        return "1" * n
    if grammar == 2:
        return "10" * (n // 2)
    if grammar == 7:
        cuts = sorted(rng.randint(0, n) for _ in range(3))
        parts = [cuts[0], cuts[1] - cuts[0], cuts[2] - cuts[1], n - cuts[2]]
        return "".join(c * k for c, k in zip("0101", parts, strict=True))
    return draw(grammar, n, rng, True)


def draw(grammar: int, n: int, rng: random.Random, member: bool) -> str | None:
    """A random string of length n in (member) or out of the language, or None where 200 draws
    found none (no string of length 2 is outside grammar 4)."""
    for _ in range(200):
        s = "".join(rng.choice("01") for _ in range(n))
        if GRAMMARS[grammar](s) == member:
            return s
    return None


def dataset(grammar: int, lengths: range, count: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    data = []
    for k in range(count):
        n = rng.choice(lengths)
        if grammar == 2 and n % 2:
            n += 1
        s = positive(grammar, n, rng) if k % 2 == 0 else draw(grammar, n, rng, False)
        if not s:
            continue
        data.append((s, int(GRAMMARS[grammar](s))))
    return data


def encode(strings: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot (T, B, 3) with the start symbol first, and lengths."""
    T = max(len(s) for s in strings) + 1
    x = torch.zeros(T, len(strings), 3)
    for b, s in enumerate(strings):
        x[0, b, START] = 1.0
        for t, c in enumerate(s, 1):
            x[t, b, int(c)] = 1.0
    return x, torch.tensor([len(s) + 1 for s in strings])


class Acceptor(nn.Module):
    def __init__(self, cell: str, hidden: int, centroids: int, temperature: float) -> None:
        super().__init__()
        args = {"centroids": centroids, "temperature": temperature} if cell == "sr-gru" else None
        self.rnn = Recurrent(cell, 3, hidden, cell_args=args)
        self.out = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        _, (h,) = self.rnn(x, lengths)
        return self.out(h[-1])


def accuracy(model: nn.Module, data: list[tuple[str, int]]) -> float:
    with torch.no_grad():
        x, lengths = encode([s for s, _ in data])
        guess = model(x, lengths).argmax(-1)
    return float((guess == torch.tensor([y for _, y in data])).float().mean())


def train(
    model: nn.Module,
    data: list[tuple[str, int]],
    steps: int,
    seed: int,
    lr: float = 1e-2,
    batch_size: int = 32,
    curriculum: bool = False,
) -> None:
    """Adam; with ``curriculum``, as the authors' length curriculum, the first half of the
    updates draw from the shortest strings only, a pool growing from a fifth of the set to all
    of it."""
    rng = random.Random(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    by_length = sorted(data, key=lambda d: len(d[0]))
    for step in range(steps):
        pool = data  # without the curriculum, the draws of the earlier runs
        if curriculum:
            reach = min(1.0, 0.2 + 0.8 * step / max(1, steps // 2))
            pool = by_length[: max(batch_size, int(reach * len(data)))]
        batch = rng.sample(pool, batch_size)
        x, lengths = encode([s for s, _ in batch])
        loss = nn.functional.cross_entropy(model(x, lengths), torch.tensor([y for _, y in batch]))
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grammar", type=int, choices=sorted(GRAMMARS), default=4)
    parser.add_argument("--train-len", type=int, default=10)
    parser.add_argument("--test-len", type=int, default=40)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--centroids", type=int, default=10)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--curriculum", action="store_true", help="shortest strings first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_set = dataset(args.grammar, range(1, args.train_len + 1), 2000, args.seed)
    test_set = dataset(args.grammar, range(args.train_len + 1, args.test_len + 1), 1000, 99)
    print(f"Tomita {args.grammar}: train lengths 1-{args.train_len}, test lengths "
          f"{args.train_len + 1}-{args.test_len}, {args.steps} updates of {args.batch_size}, "
          f"Adam {args.lr}{', length curriculum' if args.curriculum else ''}; {args.hidden} "
          f"units, {args.centroids} centroids, temperature {args.temperature}")  # fmt: skip
    models = {}
    for cell in ("sr-gru", "gru"):
        model = Acceptor(cell, args.hidden, args.centroids, args.temperature)
        train(model, train_set, args.steps, args.seed, args.lr, args.batch_size, args.curriculum)
        models[cell] = model
        print(f"{cell}: train accuracy {accuracy(model, train_set):.4f}, "
              f"longer test strings {accuracy(model, test_set):.4f}")  # fmt: skip
    sr = models["sr-gru"]
    cell = sr.rnn.layer_cells[0]
    with torch.no_grad():
        accepting = sr.out(cell.centroids).argmax(-1) == 1
    strings = [s for s, _ in train_set[:500]]
    sequences = [encode([s])[0][:, 0] for s in strings]
    start, transitions, accepts = extract_automaton(cell, sequences, accepting)
    states = sorted({start} | {s for s, _ in transitions} | set(transitions.values()))
    print(f"extracted automaton: {len(states)} states, start {start}, accepting {sorted(accepts)}")
    for (state, symbol), target in sorted(transitions.items()):
        print(f"  {state} --{symbol}--> {target}")

    def run(s: str) -> int:
        state = start
        for c in s:
            state = transitions.get((state, int(c)), -1)
            if state < 0:
                return 0
        return int(state in accepts)

    right = sum(run(s) == y for s, y in test_set) / len(test_set)
    print(f"the automaton on the longer test strings: accuracy {right:.4f}")


if __name__ == "__main__":
    main()
