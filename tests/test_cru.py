"""The CRU cell against an independent float64 transcription of its filter, and the time gaps'
way through ``Recurrent`` (padding, both directions, chunks, refusals).

Each step updates the prior with the observation, then predicts over the gap to the next step.
The transcription keeps the full 2H x 2H covariance, takes the prediction's integral
int_0^dt e^{As} Q e^{A^T s} ds by Simpson's rule (not Van Loan's block exponential, not the
f-CRU's diagonalisation), builds each A_k from its band entries with explicit loops in the
documented order, and writes the update as the textbook Kalman update with H = [I, 0]
(K = P H^T (H P H^T + R)^-1, P <- (I - K H) P); it keeps the three block diagonals after each
prediction, as the paper's factorised covariance does.
"""

import math

import pytest
import torch

from rnnlab import Recurrent
from rnnlab.errors import ConfigError

F64 = torch.float64


def _band_matrix(entries, H, b):
    """A 2H x 2H matrix from its band entries, blocks uu, ul, lu, ll, each row-major."""
    A = torch.zeros(2 * H, 2 * H, dtype=F64)
    k = 0
    for r0, c0 in ((0, 0), (0, H), (H, 0), (H, H)):
        for i in range(H):
            for j in range(H):
                if abs(i - j) <= b:
                    A[r0 + i, c0 + j] = entries[k]
                    k += 1
    assert k == len(entries)
    return A


def _simpson(f, dt, intervals=200):
    h = dt / intervals
    total = f(0.0) + f(dt)
    for k in range(1, intervals):
        total = total + (4 if k % 2 else 2) * f(k * h)
    return total * h / 3


def cru_reference(p, x, gaps, H, fast, bandwidth, output="prior", stable=False):
    """Per step: the Kalman update with the observation, then the prediction over the gap."""
    T, B, _ = x.shape
    n = 2 * H
    q = torch.log1p(torch.exp(p["diffusion_raw"]))  # softplus
    Q = torch.diag(q)
    outputs = torch.zeros(T, B, H, dtype=F64)
    for b in range(B):
        mu = torch.zeros(n, dtype=F64)
        P = torch.eye(n, dtype=F64)  # the zero state: unit variances
        d = torch.diagonal
        for t in range(T):
            # the observation the input encodes
            proj = p["weight_ih"] @ x[t, b] + p["bias"]
            w, v = proj[:H], proj[H:]
            r = torch.where(v < 0, torch.exp(v), v + 1)
            Hobs = torch.cat([torch.eye(H, dtype=F64), torch.zeros(H, H, dtype=F64)], 1)
            S = Hobs @ P @ Hobs.T + torch.diag(r)
            K = P @ Hobs.T @ torch.linalg.inv(S)
            mu = mu + K @ (w - Hobs @ mu)
            P = (torch.eye(n, dtype=F64) - K @ Hobs) @ P
            shown = (mu, d(P[:H, :H]), d(P[H:, H:]), d(P[:H, H:]))
            logits = p["trans_weight"] @ mu + p["trans_bias"]
            alpha = torch.exp(logits - logits.max())
            alpha = alpha / alpha.sum()
            if fast:
                V = torch.linalg.matrix_exp(p["skew"] - p["skew"].T)
                lam = alpha @ p["eigen_basis"]
                if stable:
                    lam = lam - max(float(lam.max()), 0.0)
                A = V @ torch.diag(lam) @ V.T
            else:
                A = sum(alpha[k] * _band_matrix(p["basis"][k], H, bandwidth)
                        for k in range(len(alpha)))  # fmt: skip
                if stable:
                    gershgorin = max(float(A[i, i] + sum(abs(float(A[i, j])) for j in range(n)
                                                         if j != i)) for i in range(n))  # fmt: skip
                    A = A - max(gershgorin, 0.0) * torch.eye(n, dtype=F64)
            dt = float(gaps[t, b])
            Fm = torch.linalg.matrix_exp(A * dt)
            noise = _simpson(lambda s, A=A: torch.linalg.matrix_exp(A * s) @ Q
                             @ torch.linalg.matrix_exp(A.T * s), dt)  # fmt: skip
            mu, P = Fm @ mu, Fm @ P @ Fm.T + noise
            # the factorised covariance: three block diagonals
            cu, cl, cs = d(P[:H, :H]), d(P[H:, H:]), d(P[:H, H:])
            P = torch.cat([torch.cat([torch.diag(cu), torch.diag(cs)], 1),
                           torch.cat([torch.diag(cs), torch.diag(cl)], 1)])  # fmt: skip
            if output == "prior":
                shown = (mu, cu, cl, cs)
            m, u, l_, s = shown
            features = torch.cat([m, u.log(), l_.log(), s])
            outputs[t, b] = p["weight_out"] @ features + p["bias_out"]
    return outputs


def _layer(fast, H=3, I=2, K=4, bandwidth=1, seed=0, output="prior", stable=False, **options):
    torch.manual_seed(seed)
    args = {
        "num_basis": K,
        "bandwidth": bandwidth,
        "fast": fast,
        "output": output,
        "stable": stable,
    }
    layer = Recurrent("cru", I, H, cell_args=args, **options).double()
    with torch.no_grad():  # away from the initialisation (A = 0 there) to test every term
        for name, param in layer.named_parameters():
            if any(key in name for key in ("basis", "skew", "eigen_basis")):
                param.normal_(0.0, 0.3)
    return layer


@pytest.mark.parametrize("output,stable", [("prior", False), ("posterior", False),
                                           ("prior", True)])  # fmt: skip
@pytest.mark.parametrize("fast", [False, True], ids=["cru", "f-cru"])
def test_cru_is_the_continuous_discrete_kalman_filter(fast, output, stable):
    layer = _layer(fast, output=output, stable=stable)
    torch.manual_seed(1)
    x = torch.randn(5, 2, 2, dtype=F64)
    gaps = torch.tensor([[0.0, 0.3], [1.0, 0.5], [0.2, 1.5], [0.7, 0.0], [1.2, 0.9]], dtype=F64)
    with torch.no_grad():
        out, _ = layer(x, gaps=gaps)
    p = {k.rsplit(".", 1)[-1]: v.detach() for k, v in layer.named_parameters()}
    want = cru_reference(p, x, gaps, 3, fast, bandwidth=1, output=output, stable=stable)
    torch.testing.assert_close(out, want, rtol=1e-8, atol=1e-8)


def test_cru_starts_as_the_authors_do():
    """Basis matrices zero (A = 0), q = trans_covar; f-CRU: V = I, eigenvalues 1e-5."""
    cell = Recurrent("cru", 2, 4, cell_args={"trans_covar": 0.25}).layer_cells[0]
    assert cell.basis.abs().max() == 0
    assert cell.basis.shape == (15, 4 * (4 + 2 * (3 + 2 + 1)))  # K, 4 blocks x band of b = 3
    torch.testing.assert_close(cell.diffusion(), torch.full((8,), 0.25))
    fast = Recurrent("cru", 2, 4, cell_args={"fast": True}).layer_cells[0]
    torch.testing.assert_close(fast.eigenvectors(), torch.eye(8))
    assert torch.all(fast.eigen_basis == 1e-5)


@pytest.mark.parametrize("fast", [False, True], ids=["cru", "f-cru"])
def test_a_gap_of_zero_predicts_nothing_and_a_longer_gap_is_less_certain(fast):
    cell = _layer(fast, H=3).layer_cells[0]
    torch.manual_seed(2)
    mu = torch.randn(2, 6, dtype=F64)
    cu, cl = torch.rand(2, 3, dtype=F64) + 0.5, torch.rand(2, 3, dtype=F64) + 0.5
    cs = 0.1 * torch.randn(2, 3, dtype=F64)
    got = cell.predict(mu, cu, cl, cs, torch.zeros(2, dtype=F64))
    for g, w in zip(got, (mu, cu, cl, cs), strict=True):
        torch.testing.assert_close(g, w)
    with torch.no_grad():
        cell.basis.zero_() if not fast else cell.eigen_basis.zero_()  # A = 0: a random walk
    q = cell.diffusion().detach()
    for dt in (0.5, 2.0):
        mean, u, l, s = cell.predict(mu, cu, cl, cs, torch.full((2,), dt, dtype=F64))
        torch.testing.assert_close(mean, mu)
        torch.testing.assert_close(u, cu + q[:3] * dt)
        torch.testing.assert_close(l, cl + q[3:] * dt)
        torch.testing.assert_close(s, cs)


@pytest.mark.parametrize("fast", [False, True], ids=["cru", "f-cru"])
def test_a_stable_transition_has_no_growing_mode(fast):
    cell = _layer(fast, H=4, stable=True).layer_cells[0]
    with torch.no_grad():
        (cell.eigen_basis if fast else cell.basis).normal_(0.5, 1.0)  # mostly growing modes
        mu = torch.randn(16, 8, dtype=F64)
        if fast:
            lam = cell.coefficients(mu) @ cell.eigen_basis
            assert lam.max() > 0.5  # without the shift
            ones, zeros = torch.ones(16, 4, dtype=F64), torch.zeros(16, 4, dtype=F64)
            mean = cell.predict(mu, ones, ones, zeros, torch.full((16,), 50.0, dtype=F64))[0]
            assert mean.norm(dim=-1).le(mu.norm(dim=-1) + 1e-9).all()  # V orthogonal: no growth
        else:
            eig = torch.linalg.eigvals(cell.transition(mu)).real
            assert eig.max() <= 1e-9


def test_gaps_default_to_one_and_change_the_result():
    layer = _layer(False)
    x = torch.randn(6, 3, 2, dtype=F64)
    with torch.no_grad():
        plain, _ = layer(x)
        ones, _ = layer(x, gaps=torch.ones(6, 3, dtype=F64))
        other, _ = layer(x, gaps=torch.full((6, 3), 2.0, dtype=F64))
    torch.testing.assert_close(plain, ones, rtol=0, atol=0)
    assert (plain - other).abs().max() > 1e-3


def test_gaps_batch_first_are_batch_by_time():
    layer = _layer(True, batch_first=True)
    x = torch.randn(3, 6, 2, dtype=F64)
    gaps = torch.rand(3, 6, dtype=F64)
    time_major = _layer(True)
    with torch.no_grad():
        a, _ = layer(x, gaps=gaps)
        b, _ = time_major(x.transpose(0, 1), gaps=gaps.t())
    torch.testing.assert_close(a, b.transpose(0, 1), rtol=0, atol=0)


@pytest.mark.parametrize("fast", [False, True], ids=["cru", "f-cru"])
def test_padding_with_gaps_changes_nothing_in_either_direction(fast):
    layer = _layer(fast, num_layers=2, bidirectional=True)
    torch.manual_seed(3)
    T, lengths = 7, torch.tensor([7, 4, 1])
    x = torch.randn(T, 3, 2, dtype=F64)
    gaps = torch.rand(T, 3, dtype=F64)
    gaps[5:, 1] = float("nan")  # padding may hold anything
    with torch.no_grad():
        out, state = layer(x, lengths, gaps=gaps)
        for b, L in enumerate(lengths.tolist()):
            alone, s = layer(x[:L, b : b + 1], gaps=gaps[:L, b : b + 1])
            torch.testing.assert_close(out[:L, b : b + 1], alone)
            assert torch.all(out[L:, b] == 0)
            for part, one in zip(state, s, strict=True):
                torch.testing.assert_close(part[:, b : b + 1], one)


def _ahead(times):
    """Gaps from each time stamp to the next, 0.5 after the last."""
    return torch.cat([times[1:] - times[:-1], torch.full_like(times[:1], 0.5)])


def test_the_backward_direction_sees_the_gaps_of_the_reversed_time_stamps():
    torch.manual_seed(4)
    both = _layer(False, bidirectional=True)
    backward = _layer(False)
    backward.cells[0].load_state_dict(both.cells[1].state_dict())
    times = torch.tensor([0.0, 0.4, 1.9, 2.0, 3.1], dtype=F64)[:, None]
    x = torch.randn(5, 1, 2, dtype=F64)
    reversed_gaps = _ahead(-times.flip(0))  # the same instants, read backwards
    reversed_gaps[-1] = 0.0  # nothing before the first step
    with torch.no_grad():
        out, _ = both(x, gaps=_ahead(times))
        want, _ = backward(x.flip(0), gaps=reversed_gaps)
    torch.testing.assert_close(out[:, :, 3:], want.flip(0))


@pytest.mark.parametrize("fast", [False, True], ids=["cru", "f-cru"])
def test_chunks_with_their_gaps_equal_one_call(fast):
    layer = _layer(fast, num_layers=2).eval()
    torch.manual_seed(5)
    x = torch.randn(9, 3, 2, dtype=F64)
    gaps = torch.rand(9, 3, dtype=F64) * 2
    lengths = torch.tensor([9, 5, 2])
    with torch.no_grad():
        want, want_state = layer(x, lengths, gaps=gaps)
        state, outs, start = None, [], 0
        for size in (4, 1, 4):
            part = (lengths - start).clamp(0, size)
            out, state = layer(x[start : start + size], part, state,
                               gaps=gaps[start : start + size])  # fmt: skip
            outs.append(out)
            start += size
    torch.testing.assert_close(torch.cat(outs), want, rtol=1e-12, atol=1e-12)
    for g, w in zip(state, want_state, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_gradients_reach_the_gaps():
    layer = _layer(False)
    x = torch.randn(3, 1, 2, dtype=F64)
    gaps = (torch.rand(3, 1, dtype=F64) + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda g: layer(x, gaps=g)[0], (gaps,))


def test_a_cell_without_gaps_refuses_them_in_one_line():
    layer = Recurrent("gru", 2, 4)
    with pytest.raises(ConfigError, match="takes no time gaps.*input features.*cru"):
        layer(torch.randn(3, 2, 2), gaps=torch.ones(3, 2))
    layer(torch.randn(3, 2, 2))  # and runs without them


@pytest.mark.parametrize(
    "gaps,message",
    [
        (torch.ones(3, 2), "shape"),
        (-torch.ones(4, 2), ">= 0"),
        (torch.full((4, 2), math.inf), "finite"),
        (torch.ones(4, 2, dtype=torch.long), "floating-point"),
        ([[1.0] * 2] * 4, "torch.Tensor"),
    ],
)
def test_bad_gaps_are_refused(gaps, message):
    layer = Recurrent("cru", 2, 4)
    with pytest.raises((ValueError, TypeError), match=message):
        layer(torch.randn(4, 2, 2), gaps=gaps)


@pytest.mark.parametrize(
    "args,message",
    [
        ({"num_basis": 0}, "num_basis"),
        ({"bandwidth": -1}, "bandwidth"),
        ({"trans_covar": 0.0}, "trans_covar"),
        ({"basis": 3}, "num_basis"),
        ({"output": "both"}, "prior or posterior"),
    ],  # fmt: skip
)
def test_bad_cell_arguments_are_refused(args, message):
    with pytest.raises(ConfigError, match=message):
        Recurrent("cru", 2, 4, cell_args=args)


def test_options_the_filter_does_not_take_are_refused():
    for option in ({"layer_norm": True}, {"zoneout": 0.1}, {"recurrent_dropout": 0.1}):
        with pytest.raises(ConfigError, match="cru"):
            Recurrent("cru", 2, 4, **option)
