"""Every cell against an independent transcription of its equations in DESIGN.md.

The transcription reads the parameters by the documented layout (rows i, f, z, o for the blocks
a variant has; peepholes i, f, o; weight_gg for FGR; GRU rows r, u, n) and writes each equation
out as in the papers, one variant at a time, without using the cells' code.
"""

import math

import pytest
import torch

from rnnlab import Recurrent

sig, tanh = torch.sigmoid, torch.tanh

LSTM_VARIANTS = [
    "lstm",
    "lstm-v",
    "lstm-nig",
    "lstm-nfg",
    "lstm-nog",
    "lstm-niaf",
    "lstm-noaf",
    "lstm-np",
    "lstm-cifg",
    "lstm-fgr",
]
ROWS = {"lstm-nig": "fzo", "lstm-nfg": "izo", "lstm-cifg": "izo", "lstm-nog": "ifz"}
PEEPHOLE_ROWS = {
    "lstm": "",
    "lstm-np": "",
    "lstm-nig": "fo",
    "lstm-nfg": "io",
    "lstm-cifg": "io",
    "lstm-nog": "if",
}


def lstm_reference(name, p, x, H):
    """Greff et al. 2017, section II, with the variant's change written out explicitly."""
    rows = ROWS.get(name, "ifzo")
    W = {k: p["weight_ih"][n * H : (n + 1) * H] for n, k in enumerate(rows)}
    R = {k: p["weight_hh"][n * H : (n + 1) * H] for n, k in enumerate(rows)}
    b = {k: p["bias"][n * H : (n + 1) * H] for n, k in enumerate(rows)}
    prow = PEEPHOLE_ROWS.get(name, "ifo")
    P = {k: p["peephole"][n] for n, k in enumerate(prow)}
    zero = torch.zeros(H, dtype=x.dtype)
    T, B, _ = x.shape
    y = torch.zeros(B, H, dtype=x.dtype)
    c = torch.zeros(B, H, dtype=x.dtype)
    a = torch.zeros(B, 3 * H, dtype=x.dtype)  # i, f, o of the previous step (FGR)
    ys = []
    for t in range(T):
        xt = x[t]
        gg = {"i": 0.0, "f": 0.0, "o": 0.0}
        if name == "lstm-fgr":
            full = a @ p["weight_gg"].T
            gg = {"i": full[:, :H], "f": full[:, H : 2 * H], "o": full[:, 2 * H :]}
        zbar = xt @ W["z"].T + y @ R["z"].T + b["z"]
        z = zbar if name == "lstm-niaf" else tanh(zbar)
        if name == "lstm-nig":
            i = torch.ones(B, H, dtype=x.dtype)
        else:
            i = sig(xt @ W["i"].T + y @ R["i"].T + P.get("i", zero) * c + b["i"] + gg["i"])
        if name == "lstm-nfg":
            f = torch.ones(B, H, dtype=x.dtype)
        elif name == "lstm-cifg":
            f = 1 - i
        else:
            f = sig(xt @ W["f"].T + y @ R["f"].T + P.get("f", zero) * c + b["f"] + gg["f"])
        c = z * i + c * f
        if name == "lstm-nog":
            o = torch.ones(B, H, dtype=x.dtype)
        else:
            o = sig(xt @ W["o"].T + y @ R["o"].T + P.get("o", zero) * c + b["o"] + gg["o"])
        y = (c if name == "lstm-noaf" else tanh(c)) * o
        a = torch.cat([i, f, o], dim=1)
        ys.append(y)
    return torch.stack(ys), y, c


def gru_reference(name, p, x, H):
    """torch's GRU (reset after R_n) and Chung et al. 2014's (reset before R_n)."""
    Wr, Wu, Wn = p["weight_ih"].split(H)
    Rr, Ru, Rn = p["weight_hh"].split(H)
    br, bu, bn = p["bias"].split(H)
    h = torch.zeros(x.shape[1], H, dtype=x.dtype)
    hs = []
    for xt in x:
        if name == "gru":
            cr, cu, cn = p["bias_hh"].split(H)
            r = sig(xt @ Wr.T + br + h @ Rr.T + cr)
            u = sig(xt @ Wu.T + bu + h @ Ru.T + cu)
            n = tanh(xt @ Wn.T + bn + r * (h @ Rn.T + cn))
        else:
            r = sig(xt @ Wr.T + h @ Rr.T + br)
            u = sig(xt @ Wu.T + h @ Ru.T + bu)
            n = tanh(xt @ Wn.T + (r * h) @ Rn.T + bn)
        h = (1 - u) * n + u * h
        hs.append(h)
    return torch.stack(hs), h


def _random_params(layer):
    with torch.no_grad():
        for param in layer.parameters():
            param.uniform_(-0.8, 0.8)
    return {k: v.detach() for k, v in layer.cells[0].named_parameters()}


@pytest.mark.parametrize("name", LSTM_VARIANTS)
def test_lstm_variant_equations(name):
    H = 5
    layer = Recurrent(name, 4, H).double()
    p = _random_params(layer)
    x = torch.randn(7, 3, 4, dtype=torch.float64)
    out, state = layer(x)
    ys, y, c = lstm_reference(name, p, x, H)
    torch.testing.assert_close(out, ys, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state[0][0], y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state[1][0], c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", LSTM_VARIANTS)
def test_lstm_parameter_layout(name):
    """Shapes of DESIGN.md's layout: only the blocks a variant has."""
    H, I = 5, 4
    params = dict(Recurrent(name, I, H).cells[0].named_parameters())
    G = len(ROWS.get(name, "ifzo"))
    assert params["weight_ih"].shape == (G * H, I)
    assert params["weight_hh"].shape == (G * H, H)
    assert params["bias"].shape == (G * H,)
    P = len(PEEPHOLE_ROWS.get(name, "ifo"))
    assert ("peephole" in params) == (P > 0)
    if P:
        assert params["peephole"].shape == (P, H)
    assert ("weight_gg" in params) == (name == "lstm-fgr")
    if name == "lstm-fgr":
        assert params["weight_gg"].shape == (3 * H, 3 * H)


@pytest.mark.parametrize("name", ["gru", "gru-v1"])
def test_gru_equations(name):
    H = 5
    layer = Recurrent(name, 4, H).double()
    p = _random_params(layer)
    x = torch.randn(6, 2, 4, dtype=torch.float64)
    out, (h,) = layer(x)
    hs, h_ref = gru_reference(name, p, x, H)
    torch.testing.assert_close(out, hs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h[0], h_ref, rtol=1e-12, atol=1e-12)


def test_tanh_equation():
    layer = Recurrent("tanh", 4, 5).double()
    p = _random_params(layer)
    x = torch.randn(6, 2, 4, dtype=torch.float64)
    y = torch.zeros(2, 5, dtype=torch.float64)
    ys = []
    for xt in x:
        y = tanh(xt @ p["weight_ih"].T + y @ p["weight_hh"].T + p["bias"])
        ys.append(y)
    torch.testing.assert_close(layer(x)[0], torch.stack(ys), rtol=1e-12, atol=1e-12)


def _ln(v, gain, bias=None, eps=1e-5):
    mu = v.mean(-1, keepdim=True)
    var = v.var(-1, unbiased=False, keepdim=True)
    out = (v - mu) / torch.sqrt(var + eps) * gain
    return out if bias is None else out + bias


def test_layer_norm_lstm_equations():
    """Ba et al. 2016, sec. 3.1: LN(W x) + LN(R y) + b, and y = o * tanh(LN(c))."""
    H = 4
    layer = Recurrent("lstm", 3, H, layer_norm=True).double()
    p = _random_params(layer)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    y = c = torch.zeros(2, H, dtype=torch.float64)
    ys = []
    for xt in x:
        pre = (
            _ln(xt @ p["weight_ih"].T, p["ln_ih_weight"])
            + _ln(y @ p["weight_hh"].T, p["ln_hh_weight"])
            + p["bias"]
        )
        i, f, z, o = pre.split(H, dim=1)
        c = sig(f) * c + sig(i) * tanh(z)
        y = sig(o) * tanh(_ln(c, p["ln_c_weight"], p["ln_c_bias"]))
        ys.append(y)
    torch.testing.assert_close(layer(x)[0], torch.stack(ys), rtol=1e-10, atol=1e-12)


def _g(x):
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
@pytest.mark.parametrize("backend", ["step", "fused"])
def test_scan_cell_equations(name, backend):
    """Feng et al. 2024, sec. 3: minGRU and minLSTM written out with f / (f + i) directly."""
    H = 5
    layer = Recurrent(name, 4, H, backend=backend).double()
    p = _random_params(layer)
    x = torch.randn(9, 3, 4, dtype=torch.float64)
    h0 = torch.randn(1, 3, H, dtype=torch.float64)
    h = h0[0]
    hs = []
    for xt in x:
        k = xt @ p["weight_ih"].T + p["bias"]
        if name == "mingru":
            kz, kh = k.split(H, dim=1)
            z = sig(kz)
            h = (1 - z) * h + z * _g(kh)
        else:
            kf, ki, kh = k.split(H, dim=1)
            f, i = sig(kf), sig(ki)
            h = f / (f + i) * h + i / (f + i) * _g(kh)
        hs.append(h)
    out, (hT,) = layer(x, state=(h0,))
    torch.testing.assert_close(out, torch.stack(hs), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hT[0], h, rtol=1e-10, atol=1e-12)


def test_scan_gradient_with_zero_state_and_empty_sequence():
    """The log-space scan keeps finite gradients for h_0 = 0 and for a sequence of length 0."""
    layer = Recurrent("mingru", 3, 4, backend="fused").double()
    h0 = torch.zeros(1, 2, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    out, (hT,) = layer(x, lengths=torch.tensor([5, 0]), state=(h0,))
    (out.sum() + hT.sum()).backward()
    assert torch.isfinite(h0.grad).all() and torch.isfinite(x.grad).all()
    torch.testing.assert_close(h0.grad[0, 1], torch.ones(4, dtype=torch.float64))  # passes through


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_log_space_scan_matches_the_step_loop(name):
    """The parallel scan (the path for accelerators) equals the recurrence, padding included."""
    layer = Recurrent(name, 4, 5, backend="step").double()
    cell = layer.layer_cells[0]
    x = torch.randn(8, 3, 4, dtype=torch.float64)
    lengths = torch.tensor([8, 5, 0])
    h0 = torch.randn(1, 3, 5, dtype=torch.float64)
    out, (hT,) = layer(x, lengths=lengths, state=(h0,))
    valid = torch.arange(8)[:, None] < lengths[None, :]
    log_a, log_b = cell.log_coefficients(cell.project_input(x))
    scan_out, (scan_h,) = cell.log_space_scan(log_a, log_b, h0[0], valid)
    torch.testing.assert_close(scan_out, out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(scan_h, hT[0], rtol=1e-10, atol=1e-12)


# --- cells of the seeds' literature (issue 18) ---------------------------------------------------
def _heaviside_st(v, dampening, support):
    """H(v) forward; backward the triangle dampening * max(0, 1 - support |v|), written as the
    derivative of S(w) = dampening (w - support w |w| / 2), w = v clamped to +-1/support."""
    w = v.clamp(-1 / support, 1 / support)
    s = dampening * (w - support * w * w.abs() / 2)
    return (v > 0).to(v.dtype) + (s - s.detach())


def egru_reference(p, x, H, dampening=0.7, support=1.0):
    """Subramoney et al. 2023 as the authors' EvNN code computes it (rows u, r, z)."""
    B = x.shape[1]
    y = torch.zeros(B, H, dtype=x.dtype)
    c = torch.zeros(B, H, dtype=x.dtype)
    W = dict(zip("urz", p["weight_ih"].split(H), strict=True))
    R = dict(zip("urz", p["weight_hh"].split(H), strict=True))
    b = dict(zip("urz", p["bias"].split(H), strict=True))
    bR = dict(zip("urz", p["bias_hh"].split(H), strict=True))
    theta = p["threshold"].clamp(0, 1)
    ys, events = [], []
    for xt in x:
        u = sig(xt @ W["u"].T + b["u"] + y @ R["u"].T + bR["u"])
        r = sig(xt @ W["r"].T + b["r"] + y @ R["r"].T + bR["r"])
        z = tanh(xt @ W["z"].T + b["z"] + r * (y @ R["z"].T + bR["z"]))
        c_hat = u * c + (1 - u) * z
        e = _heaviside_st(c_hat - theta, dampening, support)
        y = e * c_hat
        c = c_hat - e * theta
        ys.append(y)
        events.append(e.detach())
    return torch.stack(ys), y, c, torch.stack(events)


@pytest.mark.parametrize("backend", ["step", "auto"])  # auto: the fused kernel where built
def test_egru_equations_and_surrogate_gradients(backend):
    """Outputs, states, activity and every gradient (through the pseudo-derivative) against the
    transcription, float64; thresholds spread so that some units fire and some do not."""
    torch.manual_seed(0)
    H = 6
    layer = Recurrent("egru", 4, H, cell_args={"dampening": 0.9, "support": 2.0},
                      backend=backend).double()  # fmt: skip
    p = _random_params(layer)
    with torch.no_grad():
        p["threshold"].copy_(torch.linspace(-0.1, 0.6, H))  # one below 0: clamped to 0
    x = torch.randn(7, 3, 4, dtype=torch.float64)
    out, (yT, cT) = layer(x)
    q = {k: v.clone().requires_grad_() for k, v in p.items()}
    want, y, c, events = egru_reference(q, x, H, 0.9, 2.0)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(yT[0], y, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(cT[0], c, rtol=1e-10, atol=1e-12)
    assert 0 < events.mean() < 1
    assert layer.statistics()["activity"] == pytest.approx(events.mean().item())
    weights = torch.randn_like(out)
    params = list(layer.cells[0].parameters())
    got = torch.autograd.grad((out * weights).sum() + cT.sum(), params)
    expected = torch.autograd.grad((want * weights).sum() + c.sum(), list(q.values()))
    for name, g, e in zip(p, got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-12, msg=name)
    assert got[-1].abs().sum() > 0  # the thresholds learn


def test_egru_thresholds_start_from_the_beta_distribution():
    torch.manual_seed(0)
    theta = Recurrent("egru", 2, 4000, cell_args={"thr_mean": 0.2}).cells[0].threshold
    assert theta.min() >= 0 and theta.max() <= 1
    assert theta.mean().item() == pytest.approx(0.2, abs=0.01)


def gatel0rd_reference(p, x, H, noise=None):
    """Gumbsch et al. 2021 (the authors' GateL0RDCell, one internal layer): rows g, r, p, o."""
    B = x.shape[1]
    y = h = torch.zeros(B, H, dtype=x.dtype)
    Wx = dict(zip("grpo", p["weight_ih"].split(H), strict=True))
    b = dict(zip("grpo", p["bias"].split(H), strict=True))
    Rh = dict(zip("gr", p["weight_hh"].split(H), strict=True))
    Rn = dict(zip("po", p["weight_hn"].split(H), strict=True))
    ys, thetas = [], []
    for t, xt in enumerate(x):
        s = xt @ Wx["g"].T + h @ Rh["g"].T + b["g"]
        if noise is not None:
            s = s - noise[t]
        gate = torch.clamp(tanh(s), min=0)
        h = gate * tanh(xt @ Wx["r"].T + h @ Rh["r"].T + b["r"]) + (1 - gate) * h
        y = tanh(xt @ Wx["p"].T + h @ Rn["p"].T + b["p"]) * sig(xt @ Wx["o"].T + h @ Rn["o"].T
                                                               + b["o"])  # fmt: skip
        ys.append(y)
        thetas.append(gate + ((gate > 0).double() - gate).detach())
    return torch.stack(ys), h, torch.stack(thetas)


@pytest.mark.parametrize("backend", ["step", "auto"])  # auto: the fused kernel where built
@pytest.mark.parametrize("training", [False, True])
def test_gatel0rd_equations_penalty_and_gradients(training, backend):
    """Outputs, latent, the fraction of latent changes and the L0 penalty (with its
    straight-through gradient) against the transcription; in training with the same noise."""
    torch.manual_seed(0)
    H, lam, sigma = 5, 0.01, 0.3
    layer = Recurrent("gatel0rd", 4, H, cell_args={"l0_lambda": lam, "gate_noise": sigma},
                      backend=backend)  # fmt: skip
    layer = layer.double().train(training)
    p = _random_params(layer)
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    torch.manual_seed(5)
    out, (yT, hT, gT) = layer(x)
    noise = None
    if training:  # the draws the cell made: one randn_like per step, (B, H) each
        torch.manual_seed(5)
        noise = [sigma * torch.randn(3, H, dtype=torch.float64) for _ in range(6)]
    q = {k: v.clone().requires_grad_() for k, v in p.items()}
    want, h, theta = gatel0rd_reference(q, x, H, noise)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hT[0], h, rtol=1e-10, atol=1e-12)
    assert 0 < theta.mean() < 1
    assert layer.statistics()["gate_openings"] == pytest.approx(theta.mean().item())
    got = torch.autograd.grad(out.sum() + layer.penalty(), list(layer.cells[0].parameters()))
    expected = torch.autograd.grad(want.sum() + lam * theta.mean(), list(q.values()))
    for name, g, e in zip(p, got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-12, msg=name)


def test_gatel0rd_shut_gates_copy_the_latent_exactly():
    layer = Recurrent("gatel0rd", 2, 4).double().eval()
    with torch.no_grad():
        layer.cells[0].bias[:4] = -50.0  # the gate's bias: s < 0, L = 0
    h0 = torch.randn(1, 3, 4, dtype=torch.float64)
    state = (torch.zeros_like(h0), h0, torch.zeros_like(h0))
    _, (_, hT, _) = layer(torch.randn(9, 3, 2, dtype=torch.float64), state=state)
    assert torch.equal(hT, h0) and layer.statistics()["gate_openings"] == 0.0


def ncgru_reference(p, x, H, d):
    """Mucllari et al. 2022 (reset after the product, as the authors' PyTorch model), with W_c
    formed by an exact solve of the Cayley transform."""
    B = x.shape[1]
    M = torch.triu(p["cayley"], diagonal=1)
    A = M - M.T
    eye = torch.eye(H, dtype=x.dtype)
    Wc = torch.linalg.solve(eye + A, eye - A) @ torch.diag(d)
    U = dict(zip("ruc", p["weight_ih"].split(H), strict=True))
    W = dict(zip("ru", p["weight_hh"].split(H), strict=True))
    b = dict(zip("ru", p["bias"].split(H), strict=True))
    h = torch.zeros(B, H, dtype=x.dtype)
    hs = []
    for xt in x:
        r = sig(xt @ U["r"].T + h @ W["r"].T + b["r"])
        u = sig(xt @ U["u"].T + h @ W["u"].T + b["u"])
        a = xt @ U["c"].T + r * (h @ Wc.T)
        c = torch.sign(a) * torch.relu(a.abs() + p["modrelu_bias"])
        h = u * h + (1 - u) * c
        hs.append(h)
    return torch.stack(hs), Wc


@pytest.mark.parametrize("backend", ["step", "auto"])  # auto: the fused kernel where built
def test_ncgru_equations_orthogonality_and_gradients(backend):
    torch.manual_seed(0)
    H = 6
    layer = Recurrent("nc-gru", 4, H, cell_args={"negatives": 2}, backend=backend).double()
    cell = layer.cells[0]
    assert cell.scaling.tolist() == [1, 1, 1, 1, -1, -1]
    p = _random_params(layer)
    x = torch.randn(7, 3, 4, dtype=torch.float64)
    out, _ = layer(x)
    q = {k: v.clone().requires_grad_() for k, v in p.items()}
    want, Wc = ncgru_reference(q, x, H, cell.scaling)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-12)
    eye = torch.eye(H, dtype=torch.float64)
    torch.testing.assert_close(Wc.detach() @ Wc.detach().T, eye, rtol=0, atol=1e-12)
    weights = torch.randn_like(out)
    got = torch.autograd.grad((out * weights).sum(), list(cell.parameters()))
    expected = torch.autograd.grad((want * weights).sum(), list(q.values()))
    for name, g, e in zip(p, got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-12, msg=name)


def test_ncgru_neumann_updates_stay_orthogonal_between_refreshes():
    """Optimiser steps move A; the kept inverse follows by the Neumann series (order 2) and is
    recomputed exactly every ``refresh`` updates: W_c stays orthogonal to round-off."""
    torch.manual_seed(1)
    layer = Recurrent("nc-gru", 3, 16, cell_args={"refresh": 1000}).double()
    cell = layer.cells[0]
    opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
    eye = torch.eye(16, dtype=torch.float64)
    worst = 0.0
    for _ in range(30):
        out, _ = layer(torch.randn(5, 4, 3, dtype=torch.float64))
        opt.zero_grad()
        out.square().sum().backward()
        opt.step()
        W = cell.candidate_matrix().detach()
        worst = max(worst, (W @ W.T - eye).abs().max().item())
        A = cell.skew().detach()
        torch.testing.assert_close(
            cell.cayley_inverse, torch.linalg.inv(eye + A), rtol=0, atol=1e-6
        )
    assert int(cell.cayley_updates) == 30  # every update went through the series, none exact
    # The carried inverse is saved: a copy loaded from the state dict computes the same outputs
    # bit for bit (an exact inverse would differ by the series' error).
    twin = Recurrent("nc-gru", 3, 16, cell_args={"refresh": 1000}).double()
    twin.load_state_dict(layer.state_dict())
    x = torch.randn(5, 4, 3, dtype=torch.float64)
    assert torch.equal(twin(x)[0], layer(x)[0])
    assert worst < 1e-6  # order-2 series: each update errs by about ||X||^3


@pytest.mark.parametrize("args", [{"negatives": -2}, {"neumann_order": 4}, {"refresh": 0}])
def test_ncgru_arguments_out_of_range_are_refused(args):
    with pytest.raises(ValueError, match=f"nc-gru's {next(iter(args))}"):
        Recurrent("nc-gru", 3, 4, cell_args=args)


def _boxcar_st(v):
    """1[v > 0] forward; backward 1 on (-0.5, 0.5]: the derivative of v clamped to that box."""
    s = v.clamp(-0.5, 0.5)
    return (v > 0).to(v.dtype) + (s - s.detach())


def adlif_reference(p, x, H, recurrent):
    """Bittar & Garner 2022 (the authors' adLIF / RadLIF layers), zero initial state."""
    e = math.exp
    alpha = p["alpha"].clamp(e(-1 / 5), e(-1 / 25))
    beta = p["beta"].clamp(e(-1 / 30), e(-1 / 120))
    a, b = p["a"].clamp(-1, 1), p["b"].clamp(0, 2)
    B = x.shape[1]
    s = u = w = torch.zeros(B, H, dtype=x.dtype)
    V = p["weight_hh"] * (1 - torch.eye(H, dtype=x.dtype)) if recurrent else None
    spikes = []
    for xt in x:
        w_new = beta * w + a * u + b * s
        current = xt @ p["weight_ih"].T - w_new
        if recurrent:
            current = current + s @ V.T
        u = alpha * (u - s) + (1 - alpha) * current
        w = w_new
        s = _boxcar_st(u - 1.0)
        spikes.append(s)
    return torch.stack(spikes), u, w


@pytest.mark.parametrize("name", ["adlif", "radlif"])
def test_adaptive_lif_equations_and_surrogate_gradients(name):
    torch.manual_seed(0)
    H = 6
    layer = Recurrent(name, 4, H, cell_args={"batch_norm": False}).double()
    p = {k: v.detach() for k, v in layer.cells[0].named_parameters()}
    with torch.no_grad():  # some parameters outside their ranges: the clamps must act
        p["a"][0], p["b"][1], p["alpha"][2] = 1.5, -0.2, 0.99
    x = 2.0 * torch.randn(12, 3, 4, dtype=torch.float64)
    out, (sT, uT, wT) = layer(x)
    q = {k: v.clone().requires_grad_() for k, v in p.items()}
    want, u, w = adlif_reference(q, x, H, name == "radlif")
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    torch.testing.assert_close(uT[0], u, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(wT[0], w, rtol=1e-10, atol=1e-12)
    assert 0 < want.mean() < 1
    assert layer.statistics()["spike_rate"] == pytest.approx(want.mean().item())
    weights = torch.randn_like(out)
    loss = (out * weights).sum() + uT.square().sum()
    got = torch.autograd.grad(loss, list(layer.cells[0].parameters()))
    expected = torch.autograd.grad((want * weights).sum() + u.square().sum(), list(q.values()))
    for key, g, e in zip(p, got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-12, msg=key)


@pytest.mark.parametrize("name", ["adlif", "radlif"])
def test_stable_adaptive_lif_keeps_every_subthreshold_mode_bounded(name):
    """stable=true clamps a >= beta - 1: the (u, w) map's eigenvalues stay within the unit
    circle for any parameters, and a long input that makes the authors' ranges overflow (a at
    its most negative) stays finite."""
    g = torch.Generator().manual_seed(0)
    e = math.exp
    for _ in range(2000):
        alpha = torch.empty(()).uniform_(e(-1 / 5), e(-1 / 25), generator=g)
        beta = torch.empty(()).uniform_(e(-1 / 30), e(-1 / 120), generator=g)
        a = torch.maximum(torch.empty(()).uniform_(-1, 1, generator=g), beta - 1)
        M = torch.tensor([[alpha - (1 - alpha) * a, -(1 - alpha) * beta], [a, beta]])
        assert torch.linalg.eigvals(M.double()).abs().max() <= 1 + 1e-6  # float32 inputs
    torch.manual_seed(0)
    x = -torch.rand(3000, 2, 3)  # below threshold throughout: the linear map alone
    runs = {}
    for stable in (False, True):
        layer = Recurrent(name, 3, 4, cell_args={"batch_norm": False, "stable": stable})
        with torch.no_grad():
            layer.cells[0].a.fill_(-1.0)
            layer.cells[0].alpha.fill_(e(-1 / 25))
            layer.cells[0].beta.fill_(e(-1 / 120))
            layer.cells[0].weight_ih.fill_(1.0)
        _, (_, u, w) = layer(x)
        runs[stable] = bool(torch.isfinite(u).all() and torch.isfinite(w).all())
    assert runs == {False: False, True: True}


def s5_reference(p, x, x0):
    """Smith et al. 2023, zero-order hold, in complex arithmetic, one step at a time."""
    lam = torch.complex(p["lambda_re"], p["lambda_im"])
    lam_bar = torch.exp(lam * torch.exp(p["log_step"]))
    B_bar = ((lam_bar - 1) / lam).unsqueeze(-1) * torch.complex(p["b_re"], p["b_im"])
    C = torch.complex(p["c_re"], p["c_im"])
    D = p["d"]
    state = x0
    ys = []
    for u in x:
        state = lam_bar * state + u.to(B_bar.dtype) @ B_bar.T
        du = u * D if D.dim() == 1 else u @ D.T
        ys.append(2 * (state @ C.T).real + du)
    return torch.stack(ys), state


@pytest.mark.parametrize("backend", ["step", "auto"])
@pytest.mark.parametrize("I", [5, 4])
def test_s5_equations_scan_and_step(backend, I):
    """The step loop and the parallel scan (auto) against the transcription, with an initial
    state, lengths (padded steps keep the state) and gradients; I = H gives the paper's diagonal
    D, I != H a dense one."""
    torch.manual_seed(0)
    H = 5
    layer = Recurrent("s5", I, H, backend=backend).double()
    p = {k: v.detach() for k, v in layer.cells[0].named_parameters()}
    assert p["d"].dim() == (1 if I == H else 2)
    x = torch.randn(13, 3, I, dtype=torch.float64)
    lengths = torch.tensor([13, 6, 1])
    y0 = torch.randn(1, 3, H, dtype=torch.float64)
    x0 = torch.complex(
        torch.randn(3, H, dtype=torch.float64), torch.randn(3, H, dtype=torch.float64)
    )
    out, (yT, re, im) = layer(x, lengths, (y0, x0.real[None], x0.imag[None]))
    q = {k: v.clone().requires_grad_() for k, v in p.items()}
    for b, n in enumerate(lengths.tolist()):
        want, xT = s5_reference(q, x[:n, b : b + 1], x0[b : b + 1])
        torch.testing.assert_close(out[:n, b : b + 1], want, rtol=1e-10, atol=1e-12)
        assert torch.all(out[n:, b] == 0)
        torch.testing.assert_close(torch.complex(re[0, b], im[0, b]), xT[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(yT[0, b], want[-1, 0], rtol=1e-10, atol=1e-12)
    want, _ = s5_reference(q, x, x0)
    full, _ = layer(x, state=(y0, x0.real[None], x0.imag[None]))
    got = torch.autograd.grad(full.sum(), list(layer.cells[0].parameters()))
    expected = torch.autograd.grad(want.sum(), list(q.values()))
    for key, g, e in zip(p, got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-11, msg=key)


def test_s5_starts_from_hippo_n():
    """Lambda: real parts -1/2, imaginary parts one of each conjugate pair of the HiPPO-N
    matrix's eigenvalues; the eigenvectors reconstruct the matrix."""
    from rnnlab.cells.s5 import hippo_n

    lam, V = hippo_n(8)
    k = torch.arange(8, dtype=torch.float64)
    A = -torch.tril(torch.sqrt(torch.outer(2 * k + 1, 2 * k + 1)), -1) - torch.diag(k + 1)
    p = torch.sqrt(k + 0.5)
    S = A + torch.outer(p, p)  # HiPPO-LegS's normal part
    torch.testing.assert_close(V @ torch.diag(lam) @ V.conj().T, S.to(torch.complex128))
    torch.testing.assert_close(lam.imag[:4], -lam.imag.flip(0)[:4])  # conjugate pairs
    cell = Recurrent("s5", 3, 4).cells[0]
    assert torch.all(cell.lambda_re == -0.5)
    torch.testing.assert_close(cell.lambda_im.double(), lam.imag[:4].float().double())


def _hmm_posteriors(log_ratio, a_init, p1, p2):
    """Exact P(s_t = 1 | x_1..t) and P(s_t = 1 | x_1..T) of a two-state HMM by the forward and
    backward messages (alpha, beta), the textbook algorithm, one unit and sequence at a time:
    P(x | s = 1) = 1 and P(x | s = 0) = exp(log_ratio)."""
    T = len(log_ratio)
    trans = torch.tensor([[1 - p2, p2], [1 - p1, p1]], dtype=torch.float64)  # rows: s_{t-1}
    emit = torch.stack([torch.exp(log_ratio), torch.ones(T, dtype=torch.float64)], 1)  # (T, 2)
    prior = torch.tensor([1 - a_init, a_init], dtype=torch.float64)
    alpha = []
    message = prior
    for t in range(T):
        message = (message @ trans) * emit[t]
        message = message / message.sum()
        alpha.append(message)
    beta = [torch.ones(2, dtype=torch.float64)]
    for t in range(T - 1, 0, -1):
        b = trans @ (emit[t] * beta[0])
        beta.insert(0, b / b.sum())
    filtered = torch.stack([m[1] for m in alpha])
    joint = torch.stack([a * b for a, b in zip(alpha, beta, strict=True)])
    return filtered, joint[:, 1] / joint.sum(1)


@pytest.mark.parametrize("smoothing", [False, True])
def test_bru_is_the_exact_hmm_posterior(smoothing):
    """The uBRU's filter and smoother against the forward-backward algorithm written from the
    HMM (messages, not the unit's recursions), per unit, with lengths."""
    torch.manual_seed(0)
    H = 3
    layer = Recurrent("bru", 4, H, cell_args={"smoothing": smoothing}).double()
    cell = layer.cells[0]
    with torch.no_grad():
        cell.theta.copy_(torch.randn(3, H))
    x = torch.randn(9, 2, 4, dtype=torch.float64)
    lengths = torch.tensor([9, 5])
    out, (aT,) = layer(x, lengths)
    a_init, p1, p2 = torch.sigmoid(cell.theta.detach())
    log_ratio = (x @ cell.weight_ih.detach().T).clamp(max=10.0)
    for b, n in enumerate(lengths.tolist()):
        for h in range(H):
            filt, smooth = _hmm_posteriors(log_ratio[:n, b, h], a_init[h], p1[h], p2[h])
            want = smooth if smoothing else filt
            torch.testing.assert_close(out[:n, b, h], want, rtol=1e-8, atol=1e-10)
            torch.testing.assert_close(aT[0, b, h], filt[-1], rtol=1e-8, atol=1e-10)
        assert torch.all(out[n:, b] == 0)


def test_adaptive_lif_batch_normalises_its_input_currents():
    """With ``batch_norm`` (the default), I_t = BN(W x_t) over the batch and the steps: in
    training the batch's statistics, in evaluation the running ones."""
    torch.manual_seed(0)
    plain = Recurrent("adlif", 4, 6, cell_args={"batch_norm": False}).double()
    normed = Recurrent("adlif", 4, 6).double()
    normed.load_state_dict(plain.state_dict(), strict=False)
    x = 0.1 * torch.randn(15, 3, 4, dtype=torch.float64)
    current = x @ plain.cells[0].weight_ih.detach().T
    mean, var = current.mean((0, 1)), current.var((0, 1), unbiased=False)
    standard = (current - mean) / torch.sqrt(var + 1e-5)
    got = normed.cells[0].project_input(x)
    torch.testing.assert_close(got, standard, rtol=1e-10, atol=1e-10)
    assert normed(x)[0].sum() > 0  # unit-variance currents cross the threshold
    assert plain(x)[0].sum() == 0  # small ones never do: no spike, no gradient to learn from


def arma_reference(p_, x, p, q):
    """The ARMA cell (Schiele et al. 2022) written with residuals: the classical ARMA(p, q)
    z_{t+1} = sum beta_i z_{t-i+1} + sum gamma_j e_{t-j+1}, e = z - zhat, with beta = A + B on
    the shared lags, gamma = -B (the cell's own correspondence), linear, no bias."""
    A, Bm = p_["ar"], p_["ma"]
    gamma = [-Bm[j] for j in range(q)]
    beta = [A[i] + (Bm[i] if i < q else 0) for i in range(p)]
    T, B, k = x.shape
    preds = [torch.zeros(B, k, dtype=x.dtype)]  # zhat_0 = 0: the initial state
    zero = torch.zeros(B, k, dtype=x.dtype)
    outs = []
    for t in range(T):
        z = lambda s: x[s] if s >= 0 else zero  # noqa: E731 (lags before the start are zeros)
        zhat = lambda s: preds[s] if s >= 0 else zero  # noqa: E731
        y = sum(z(t - i) @ beta[i] for i in range(p))
        y = y + sum((z(t - j) - zhat(t - j)) @ gamma[j] for j in range(q))
        preds.append(y)
        outs.append(y)
    return torch.stack(outs)


@pytest.mark.parametrize("p,q", [(2, 1), (1, 3), (3, 3)])
def test_arma_cell_is_the_classical_arma_model(p, q):
    """Step by step against ARMA(p, q) written with residuals; k = 2 channels."""
    torch.manual_seed(0)
    layer = Recurrent("arma", 2, 2, cell_args={"p": p, "q": q}).double()
    params = {k: v.detach() for k, v in layer.cells[0].named_parameters()}
    with torch.no_grad():
        for v in params.values():
            v.uniform_(-0.4, 0.4)
    x = torch.randn(12, 3, 2, dtype=torch.float64)
    out, state = layer(x)
    want = arma_reference(params, x, p, q)
    # The cell's output at step t is its prediction of step t + 1; the reference's zhat_{t+1}.
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-12)
    assert len(state) == q + max(p, q) - 1


def test_sr_gru_equations_and_hard_limit():
    """Wang & Niepert 2019 (the authors' SR-GRU): a hard-sigmoid GRU without biases whose new
    state is the softmax mixture of the centroids; at a small temperature the state is one
    centroid."""
    torch.manual_seed(0)
    H, k = 5, 4
    layer = Recurrent("sr-gru", 3, H, cell_args={"centroids": k, "temperature": 0.7}).double()
    p = {n: v.detach() for n, v in layer.cells[0].named_parameters()}
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    out, _ = layer(x)
    hs = lambda v: torch.clamp(0.2 * v + 0.5, 0, 1)  # noqa: E731
    U = dict(zip("zrc", p["weight_ih"].split(H), strict=True))
    W = dict(zip("zrc", p["weight_hh"].split(H), strict=True))
    S = p["centroids"]
    h = torch.zeros(2, H, dtype=torch.float64)
    want, alphas = [], []
    for xt in x:
        z = hs(xt @ U["z"].T + h @ W["z"].T)
        r = hs(xt @ U["r"].T + h @ W["r"].T)
        c = tanh(xt @ U["c"].T + (r * h) @ W["c"].T)
        u = (1 - z) * c + z * h
        alpha = torch.softmax(u @ S.T / 0.7, dim=-1)
        h = alpha @ S
        want.append(h)
        alphas.append(alpha)
    torch.testing.assert_close(out, torch.stack(want), rtol=1e-10, atol=1e-12)
    probs = layer.cells[0].transition_probabilities(x)
    torch.testing.assert_close(probs, torch.stack(alphas), rtol=1e-10, atol=1e-12)
    cold = Recurrent("sr-gru", 3, H, cell_args={"centroids": k, "temperature": 1e-6}).double()
    states, _ = cold(x)
    distances = torch.cdist(states.reshape(-1, H), cold.cells[0].centroids.detach())
    assert torch.all(distances.min(-1).values < 1e-8)  # every state is a centroid


def test_sr_gru_automaton_reproduces_a_hard_networks_state_path():
    """At a temperature near 0 the SR-GRU is a deterministic automaton over its centroids: the
    extracted one, run on each string, visits the states the network visits."""
    from rnnlab.cells.srgru import extract_automaton

    torch.manual_seed(0)
    layer = Recurrent("sr-gru", 3, 6, cell_args={"centroids": 5, "temperature": 1e-6}).double()
    cell = layer.cells[0]
    gen = torch.Generator().manual_seed(1)
    sequences = []
    for _ in range(40):
        symbols = [2] + torch.randint(0, 2, (int(torch.randint(1, 9, (1,), generator=gen)),),
                                      generator=gen).tolist()  # fmt: skip
        sequences.append(torch.nn.functional.one_hot(torch.tensor(symbols), 3).double())
    start, transitions, accepts = extract_automaton(
        cell, sequences, torch.ones(5, dtype=torch.bool)
    )
    assert accepts <= set(range(5))
    for x in sequences:
        path = cell.transition_probabilities(x.unsqueeze(1))[:, 0].argmax(-1).tolist()
        state = start
        assert path[0] == start
        for t, symbol in enumerate(x.argmax(-1).tolist()[1:], 1):
            state = transitions[(state, symbol)]
            assert state == path[t]


@pytest.mark.parametrize("peepholes", [True, False])
def test_sr_lstm_equations_and_hard_limit(peepholes):
    """Wang & Niepert 2019 (the authors' SR-LSTM-P, and without peepholes the SR-LSTM): an LSTM
    whose output h is the softmax mixture of the centroids and whose cell state c is left free;
    at a small temperature every output is one centroid while c is not."""
    torch.manual_seed(0)
    H, k, tau = 5, 4, 0.7
    args = {"centroids": k, "temperature": tau, "peepholes": peepholes}
    layer = Recurrent("sr-lstm", 3, H, cell_args=args).double()
    p = {n: v.detach() for n, v in layer.cells[0].named_parameters()}
    assert ("peephole" in p) == peepholes
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    out, (h_last, c_last) = layer(x)
    W = dict(zip("ifzo", p["weight_ih"].split(H), strict=True))
    R = dict(zip("ifzo", p["weight_hh"].split(H), strict=True))
    b = dict(zip("ifzo", p["bias"].split(H), strict=True))
    P = dict(zip("ifo", p["peephole"] if peepholes else torch.zeros(3, H), strict=True))
    S = p["centroids"]
    h = torch.zeros(2, H, dtype=torch.float64)
    c = torch.zeros(2, H, dtype=torch.float64)
    want, alphas = [], []
    for xt in x:
        pre = {g: xt @ W[g].T + h @ R[g].T + b[g] for g in "ifzo"}
        i = sig(pre["i"] + P["i"] * c)
        f = sig(pre["f"] + P["f"] * c)
        c = f * c + i * tanh(pre["z"])
        o = sig(pre["o"] + P["o"] * c)
        alpha = torch.softmax((o * tanh(c)) @ S.T / tau, dim=-1)
        h = alpha @ S
        want.append(h)
        alphas.append(alpha)
    torch.testing.assert_close(out, torch.stack(want), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c_last[-1], c, rtol=1e-10, atol=1e-12)
    probs = layer.cells[0].transition_probabilities(x)
    torch.testing.assert_close(probs, torch.stack(alphas), rtol=1e-10, atol=1e-12)
    cold_args = {**args, "temperature": 1e-6}
    cold = Recurrent("sr-lstm", 3, H, cell_args=cold_args).double()
    states, (_, c_cold) = cold(x)
    distances = torch.cdist(states.reshape(-1, H), cold.cells[0].centroids.detach())
    assert torch.all(distances.min(-1).values < 1e-8)  # every output is a centroid
    assert torch.cdist(c_cold[-1], cold.cells[0].centroids.detach()).min() > 1e-3  # c is free
