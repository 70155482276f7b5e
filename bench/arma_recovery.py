"""The ARMA cell's parameter recovery (Schiele et al. 2022's simulation, issue 18).

Simulates ARMA(2, 1), z_t = 0.1 z_{t-1} + 0.3 z_{t-2} + e_t - 0.4 e_{t-1}, e ~ N(0, 2^2), 25,000
steps (seeded), and fits on windows of 10 steps, predicting each next value (MSE, Adam 1e-3,
batches of 200, the authors' setting but fewer epochs):

- rnnlab's ``arma`` cell (p = 2, q = 1, linear, no bias): its coefficients read back as
  beta = A + B, gamma = -B;
- a GRU of 8 units with a linear head, the same budget;
- statsmodels' ARIMA(2, 0, 1) by maximum likelihood, where statsmodels is installed.

Prints the true and recovered coefficients and each model's one-step MSE on the last 20% of the
series (the innovation variance, 4, is the floor). It measures; it asserts nothing.

    python bench/arma_recovery.py [--epochs 30] [--seed 0]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from rnnlab import Recurrent

AR, MA, SIGMA, N, WINDOW = (0.1, 0.3), (-0.4,), 2.0, 25_000, 10


def simulate(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    e = SIGMA * torch.randn(N + 100, generator=g, dtype=torch.float64)
    z = torch.zeros(N + 100, dtype=torch.float64)
    for t in range(2, N + 100):
        z[t] = AR[0] * z[t - 1] + AR[1] * z[t - 2] + e[t] + MA[0] * e[t - 1]
    return z[100:]  # past the start's transient


def windows(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (n, WINDOW, 1) and the next value after each step (n, WINDOW, 1)."""
    x = z.unfold(0, WINDOW + 1, 1)
    return x[:, :-1, None].float(), x[:, 1:, None].float()


class Forecaster(nn.Module):
    def __init__(self, cell: str, hidden: int, **cell_args: object) -> None:
        super().__init__()
        self.rnn = Recurrent(cell, 1, hidden, batch_first=True, cell_args=cell_args or None)
        self.head = nn.Identity() if cell == "arma" else nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0])


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=g).split(200):
            loss = (model(x[batch]) - y[batch]).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()


def one_step_mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """MSE of the last step's prediction of each window (a full window of history)."""
    with torch.no_grad():
        return float((model(x)[:, -1] - y[:, -1]).square().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    z = simulate(args.seed)
    split = int(0.8 * N)
    x_train, y_train = windows(z[:split])
    x_test, y_test = windows(z[split:])
    print(f"ARMA(2, 1): beta {AR}, gamma {MA}, sigma^2 {SIGMA**2}; {N} steps, windows of {WINDOW}")
    arma = Forecaster("arma", 1, p=2, q=1)
    gru = Forecaster("gru", 8)
    for name, model in (("arma cell", arma), ("gru (8 units)", gru)):
        fit(model, x_train, y_train, args.epochs, args.seed)
        print(f"{name}: test one-step MSE {one_step_mse(model, x_test, y_test):.4f}")
    cell = arma.rnn.layer_cells[0]
    A, B = cell.ar.detach().flatten(), cell.ma.detach().flatten()
    beta = (float(A[0] + B[0]), float(A[1]))
    print(f"arma cell: beta ({beta[0]:.3f}, {beta[1]:.3f}), gamma ({-float(B[0]):.3f},)")
    try:
        from statsmodels.tsa.arima.model import ARIMA
    except ImportError:
        print("statsmodels: not installed (pip install statsmodels)")
        return
    fitted = ARIMA(z[:split].numpy(), order=(2, 0, 1), trend="n").fit()
    ar, ma = fitted.arparams, fitted.maparams
    print(f"statsmodels ARIMA(2,0,1): beta ({ar[0]:.3f}, {ar[1]:.3f}), gamma ({ma[0]:.3f},), "
          f"sigma^2 {fitted.params[-1]:.3f}")  # fmt: skip
    test = fitted.apply(z.numpy())
    residual = z.numpy()[split:] - test.fittedvalues[split:]
    print(f"statsmodels ARIMA: test one-step MSE {float((residual**2).mean()):.4f}")


if __name__ == "__main__":
    main()
