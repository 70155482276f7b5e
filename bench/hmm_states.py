"""Hidden states of noisy Markov signals, frame by frame: the uBRU's smoothing against its
filter, a GRU and a bidirectional GRU (Bittar & Garner 2022; issue 18 item 1).

J independent two-state Markov chains s^j_t in {0, 1}, each switching with its own probability
per step (--switch, e.g. 0.02 to 0.2), are seen only through D noisy mixtures:

    x_t = M (2 s_t - 1) + sigma eps_t,     M (D, J) ~ N(0, 1/J),  eps_t ~ N(0, I_D)

and every model labels every frame with all J states (J sigmoid outputs, binary cross-entropy).
A state at frame t is evidenced by the frames after it as much as by those before: a causal
model (the uBRU's filter, a GRU) can use only the past, the uBRU's smoothing pass and a
bidirectional GRU both. The task's own optimum is known exactly: the joint chain (2^J states) is
a hidden Markov model, whose forward messages give the best causal labels and whose
forward-backward posteriors the best labels of all; both frame errors are printed as floors.
Each model is a recurrent layer of --hidden units (per direction for the bidirectional GRU) and
a linear read-out, trained with Adam at the same budget; frame error = the fraction of wrong
(frame, chain) labels on a test set drawn apart. Everything is drawn from --seed. It measures;
it asserts nothing.

    python bench/hmm_states.py [--chains 4 --channels 8 --sigma 1.5 --steps 2000 --hidden 16]
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import torch
from torch import Tensor, nn

from rnnlab import Recurrent


# --- the data and its exact posteriors ------------------------------------------------------
def draw(
    n: int, T: int, switch: Tensor, mixing: Tensor, sigma: float, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """n sequences: observations (T, n, D) and states (T, n, J) in {0, 1}; each chain starts
    from its stationary (uniform) distribution."""
    J = switch.numel()
    s = torch.empty(T, n, J)
    s[0] = (torch.rand(n, J, generator=gen) < 0.5).float()
    for t in range(1, T):
        flip = (torch.rand(n, J, generator=gen) < switch).float()
        s[t] = (s[t - 1] + flip) % 2
    noise = torch.randn(T, n, mixing.shape[0], generator=gen)
    return (2 * s - 1) @ mixing.T + sigma * noise, s


def exact_marginals(
    x: Tensor, switch: Tensor, mixing: Tensor, sigma: float
) -> tuple[Tensor, Tensor]:
    """P(s^j_t = 1 | x_1..t) and P(s^j_t = 1 | x_1..T), (T, n, J), by the forward and
    forward-backward recursions over the joint chain's 2^J states (float64)."""
    x = x.double()
    J = switch.numel()
    joint = torch.tensor(list(itertools.product([0.0, 1.0], repeat=J)), dtype=torch.float64)
    A = torch.ones(1, 1, dtype=torch.float64)  # the joint transitions: a Kronecker product
    for p in switch.double().tolist():
        A = torch.kron(A, torch.tensor([[1 - p, p], [p, 1 - p]], dtype=torch.float64))
    means = (2 * joint - 1) @ mixing.double().T  # (2^J, D)
    loglik = -((x.unsqueeze(2) - means) ** 2).sum(-1) / (2 * sigma**2)  # (T, n, 2^J)
    lik = (loglik - loglik.max(-1, keepdim=True).values).exp()
    T = x.shape[0]
    alpha = torch.empty_like(lik)
    a = torch.full_like(lik[0], 1.0 / 2**J) * lik[0]
    alpha[0] = a / a.sum(-1, keepdim=True)
    for t in range(1, T):
        a = (alpha[t - 1] @ A) * lik[t]
        alpha[t] = a / a.sum(-1, keepdim=True)
    beta = torch.ones_like(lik)
    for t in range(T - 2, -1, -1):
        b = (beta[t + 1] * lik[t + 1]) @ A.T
        beta[t] = b / b.sum(-1, keepdim=True)
    posterior = alpha * beta
    posterior = posterior / posterior.sum(-1, keepdim=True)
    return alpha @ joint, posterior @ joint


# --- the models ------------------------------------------------------------------------------
class Labeller(nn.Module):
    """A recurrent layer and a linear read-out per frame: J logits."""

    def __init__(self, cell: str, inputs: int, hidden: int, chains: int, **layer) -> None:
        super().__init__()
        self.rnn = Recurrent(cell, inputs, hidden, **layer)
        width = hidden * (2 if layer.get("bidirectional") else 1)
        self.out = nn.Linear(width, chains)

    def forward(self, x: Tensor) -> Tensor:
        y, _ = self.rnn(x)
        return self.out(y)


MODELS = {  # name -> (cell, layer options)
    "bru (smoothing)": ("bru", {"cell_args": {"smoothing": True}}),
    "bru (filter)": ("bru", {"cell_args": {"smoothing": False}}),
    "gru": ("gru", {}),
    "bi-gru": ("gru", {"bidirectional": True}),
}


def frame_error(guess: Tensor, s: Tensor) -> float:
    return float(((guess > 0.5).float() != s).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--switch", default="0.02,0.05,0.1,0.2", help="one per chain")
    parser.add_argument("--sigma", type=float, default=1.5)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    switch = torch.tensor([float(p) for p in args.switch.split(",")])
    if switch.numel() != args.chains:
        parser.error(f"--switch gives {switch.numel()} probabilities for {args.chains} chains")
    mixing = torch.randn(args.channels, args.chains, generator=gen) / math.sqrt(args.chains)
    x_train, s_train = draw(args.train_size, args.length, switch, mixing, args.sigma, gen)
    x_test, s_test = draw(args.test_size, args.length, switch, mixing, args.sigma, gen)
    filtered, smoothed = exact_marginals(x_test, switch, mixing, args.sigma)
    print(f"{args.chains} chains (switch {args.switch}) in {args.channels} channels, sigma "
          f"{args.sigma}, T = {args.length}; {args.train_size} training sequences, "
          f"{args.test_size} test; {args.steps} updates of {args.batch_size}, "
          f"Adam {args.lr}")  # fmt: skip
    per_chain = lambda p: " ".join(  # noqa: E731
        f"{frame_error(p[..., j], s_test[..., j]):.4f}" for j in range(args.chains)
    )
    print(f"exact HMM filter (best causal): frame error {frame_error(filtered, s_test):.4f} "
          f"(per chain {per_chain(filtered)})")  # fmt: skip
    print(f"exact HMM smoother (best of all): frame error {frame_error(smoothed, s_test):.4f} "
          f"(per chain {per_chain(smoothed)})")  # fmt: skip
    for name in args.models.split(","):
        cell, layer = MODELS[name]
        torch.manual_seed(args.seed)
        model = Labeller(cell, args.channels, args.hidden, args.chains, **layer)
        params = sum(p.numel() for p in model.parameters())
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        batches = torch.Generator().manual_seed(args.seed + 1)
        began = time.perf_counter()
        for _ in range(args.steps):
            idx = torch.randint(0, args.train_size, (args.batch_size,), generator=batches)
            loss = nn.functional.binary_cross_entropy_with_logits(
                model(x_train[:, idx]), s_train[:, idx]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        wall = time.perf_counter() - began
        model.eval()
        with torch.no_grad():
            p = torch.sigmoid(model(x_test))
        print(f"{name} ({params} parameters, {wall:.0f} s): frame error "
              f"{frame_error(p, s_test):.4f} (per chain {per_chain(p)})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
