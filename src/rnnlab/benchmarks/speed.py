"""Speed benchmark: every cell against torch's own recurrent modules, measured in the same run.

For each cell and shape (B, T, I, H): forward and forward+backward wall times (median of repeats,
after warm-up), peak memory of a forward+backward, the ratio of each to the torch module of the
family (nn.LSTM for the LSTM family, nn.GRU for the GRUs, nn.RNN for tanh), and the time of the
matrix products alone that a forward+backward of that cell needs (the floor). The cell and its
torch module run alternately in the same rounds, so each ratio compares times under one load.
Prints a markdown table and writes JSON. It measures; it asserts nothing.

    rnnlab bench speed                          # every cell, the three standard shapes
    rnnlab bench speed --cells lstm,lstm-v --shapes 32,100,88,256
    python bench/speed.py ...                   # the same, from a checkout

Peak memory, on the CPU, is the growth of the peak resident set size of a fresh process that
runs one forward+backward after a warm-up step, so every measurement runs in a subprocess of its
own; on a GPU (``--device cuda``) it is the growth of torch's peak allocated memory over that step,
and every time is taken between two synchronisations of the device.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import rnnlab
from rnnlab import Recurrent
from rnnlab.device import resolve_device
from rnnlab.errors import ConfigError, unknown_name
from rnnlab.recurrent import BACKENDS

SHAPES = [(32, 100, 88, 256), (64, 500, 128, 512), (1, 1000, 88, 128)]
TORCH_OF = {"gru": nn.GRU, "gru-v1": nn.GRU, "tanh": nn.RNN}  # the LSTM family: nn.LSTM


def torch_module(cell: str) -> type[nn.Module]:
    return TORCH_OF.get(cell, nn.LSTM)


def build(name: str, I: int, H: int, backend: str, **options: Any) -> nn.Module:
    """A torch module (``torch:lstm`` ...) or one of our cells with ``Recurrent``'s options."""
    if name.startswith("torch:"):
        return {"torch:lstm": nn.LSTM, "torch:gru": nn.GRU, "torch:rnn": nn.RNN}[name](I, H)
    return Recurrent(name, I, H, backend=backend, **options)


DEVICE = torch.device("cpu")  # where the benchmark runs (--device)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (and the extension build, the first time)
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def measure_time(
    name: str, shape: tuple[int, ...], backend: str, repeats: int, **options: Any
) -> dict:
    B, T, I, H = shape
    torch.manual_seed(0)
    module = build(name, I, H, backend, **options).to(DEVICE)
    x = torch.randn(T, B, I, device=DEVICE)

    def forward():
        with torch.no_grad():
            module(x)

    def forward_backward():
        out, _ = module(x)
        out.sum().backward()

    return {"forward_ms": timed(forward, repeats), "fwd_bwd_ms": timed(forward_backward, repeats)}


def measure_pair(
    name: str, ref: str, shape: tuple[int, ...], backend: str, repeats: int, **options: Any
) -> dict:
    """A cell's forward (under ``no_grad``) and forward+backward times with its torch
    reference's, taken in the same interleaved rounds (``interleaved_medians``), so that each
    ratio compares times taken under the same machine load."""
    B, T, I, H = shape
    torch.manual_seed(0)
    modules = {
        "cell": build(name, I, H, backend, **options).to(DEVICE),
        "ref": build(ref, I, H, backend).to(DEVICE),
    }
    x = torch.randn(T, B, I, device=DEVICE)
    medians = interleaved_medians(modules, x, repeats)
    return {
        "forward_ms": medians[("cell", "infer")],
        "fwd_bwd_ms": medians[("cell", "train")],
        "ref_forward_ms": medians[("ref", "infer")],
        "ref_fwd_bwd_ms": medians[("ref", "train")],
    }


def once_ms(module: nn.Module, x: torch.Tensor, train: bool) -> float:
    """One call of ``module`` on x in ms: forward+backward of the outputs' sum (``train``) or a
    forward under ``no_grad``."""
    _sync()
    start = time.perf_counter()
    if train:
        out, _ = module(x)
        out.sum().backward()
    else:
        with torch.no_grad():
            module(x)
    _sync()
    return (time.perf_counter() - start) * 1000


def interleaved_medians(
    modules: dict[Any, nn.Module],
    x: torch.Tensor,
    rounds: int,
    floors: dict[str, Any] | None = None,
) -> dict[tuple[Any, str], float]:
    """Medians over ``rounds`` in which every module runs once in training ("train") and once
    in inference ("infer") and every floor (name -> a function returning ms) once ("floor"),
    so that all of them see the same machine load (the bench scripts' same-run ratios). Each
    module runs once first (warm-up, and the extension's build)."""
    for m in modules.values():
        once_ms(m, x, True)
    times: dict[tuple[Any, str], list[float]] = {}
    for _ in range(rounds):
        for key, m in modules.items():
            for mode in ("train", "infer"):
                times.setdefault((key, mode), []).append(once_ms(m, x, mode == "train"))
        for name, floor in (floors or {}).items():
            times.setdefault((name, "floor"), []).append(floor())
    return {k: statistics.median(v) for k, v in times.items()}


def matmul_floor(cell: str, shape: tuple[int, ...], repeats: int) -> float:
    """The matrix products of a forward+backward: the input projection, T recurrent products
    forward and T backward, and the weight and input gradients as single products."""
    B, T, I, H = shape
    layer = Recurrent(cell, I, H).layer_cells[0]
    GH = layer.gate_rows * H  # the input projection's rows
    recurrent = layer.recurrent_weights
    x = torch.randn(T * B, I, device=DEVICE)
    W, R = torch.randn(GH, I, device=DEVICE), torch.randn(GH, H, device=DEVICE)
    y, d = torch.randn(B, H, device=DEVICE), torch.randn(B, GH, device=DEVICE)
    dpre, ys = torch.randn(T * B, GH, device=DEVICE), torch.randn(T * B, H, device=DEVICE)

    def products():
        x @ W.t()
        for _ in range(T if recurrent else 0):  # the scan and spiking cells without R have none
            torch.mm(y, R.t())
            torch.mm(d, R)
        dpre.t() @ ys
        dpre.t() @ x
        dpre @ W

    return timed(products, repeats)


def matmul_flops(cell: str, shape: tuple[int, ...], backward: bool = True) -> float:
    """The floating-point operations of a layer's matrix products (elementwise work is not
    counted, as in the usual RNN FLOP counts): a forward 2 T B G*H (I + H) (the scan cells have
    no recurrent product: 2 T B G*H I), plus FGR's gate-to-gate product 2 T B (3H)^2; a
    forward+backward three times the forward (the backward's d x, d W_ih, d y and d R are two
    products for each one of the forward)."""
    B, T, I, H = shape
    torch_rows = {"torch:lstm": (4, True), "torch:gru": (3, True), "torch:rnn": (1, True)}
    if cell in torch_rows:
        rows, recurrent, fgr = *torch_rows[cell], False
    else:
        layer = Recurrent(cell, I, H).layer_cells[0]
        rows, recurrent = layer.gate_rows, layer.recurrent_weights
        fgr = hasattr(layer, "weight_gg")
    forward = 2.0 * T * B * rows * H * (I + (H if recurrent else 0))
    if fgr:
        forward += 2.0 * T * B * (3 * H) ** 2
    return forward * (3 if backward else 1)


def matmul_peak(repeats: int, n: int = 2048) -> float:
    """GFLOP/s of one large square float32 product (n x n by n x n), the machine's measured
    matrix-product peak that the cells' rates are stated against."""
    a, b = torch.randn(n, n, device=DEVICE), torch.randn(n, n, device=DEVICE)
    ms = timed(lambda: torch.mm(a, b), max(repeats, 3))
    return 2.0 * n**3 / (ms / 1000) / 1e9


def measure_memory(name: str, shape: tuple[int, ...], backend: str, **options: Any) -> float:
    """Peak resident-set growth (MiB) of one forward+backward, in a fresh process: the peak is
    reset just before the step (Linux: /proc/self/clear_refs) and read after it (VmHWM). On a
    GPU: the growth of torch's peak allocated memory over the step, in this process."""
    if DEVICE.type == "cuda":
        B, T, I, H = shape
        module = build(name, I, H, backend, **options).to(DEVICE)
        module(torch.randn(2, B, I, device=DEVICE))[0].sum().backward()
        x = torch.randn(T, B, I, device=DEVICE)
        _sync()
        torch.cuda.reset_peak_memory_stats(DEVICE)
        base = torch.cuda.memory_allocated(DEVICE)
        module(x)[0].sum().backward()
        _sync()
        return (torch.cuda.max_memory_allocated(DEVICE) - base) / 2**20
    code = (
        "import sys, torch\n"
        "from rnnlab.benchmarks.speed import build, rss_kib\n"
        f"B, T, I, H = {tuple(shape)}\n"
        f"m = build({name!r}, I, H, {backend!r}, **{options!r})\n"
        "x = torch.randn(T, B, I)\n"
        "m(torch.randn(2, B, I))[0].sum().backward()\n"  # warm-up: libraries, extension
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "base = rss_kib('VmRSS')\n"
        "m(x)[0].sum().backward()\n"
        "print(rss_kib('VmHWM') - base)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def sweep_lengths(
    cells: list[str], lengths: list[int], B: int, I: int, H: int, repeats: int
) -> None:
    """Forward+backward time against the sequence length T: where the parallel-scan cells
    (whose steps all run at once) overtake the sequential ones."""
    print(f"forward+backward ms at B={B}, I={I}, H={H}, {torch.get_num_threads()} threads")
    print("| T | " + " | ".join(cells) + " |")
    print("|" + " --- |" * (len(cells) + 1))
    for T in lengths:
        times = [measure_time(c, (B, T, I, H), "auto", repeats)["fwd_bwd_ms"] for c in cells]
        print(f"| {T} | " + " | ".join(f"{t:.1f}" for t in times) + " |", flush=True)


# Bounds of --shapes and --sweep-t: beyond them a shape is a typo, not a benchmark (a layer of
# 16,384 LSTM units already holds 4 GiB of recurrent weights), and the product bound keeps the
# (T, B, max(I, H)) activations of one layer under 4 GiB of float32.
LIMITS = {"B": 4096, "T": 100_000, "I": 16_384, "H": 16_384}
MAX_ELEMENTS = 2**30


class _OneLineParser(argparse.ArgumentParser):
    """A bad option is one line (``rnnlab: error: ...``, exit 2), not the usage block."""

    def error(self, message: str) -> Any:
        prog = self.prog or "rnnlab bench speed"
        raise ConfigError(f"{message} (`{prog} --help` lists the options)")


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"takes comma-separated whole numbers, got {text!r}"
        ) from None


def _shapes(text: str) -> list[tuple[int, int, int, int]]:
    """--shapes: B,T,I,H[;B,T,I,H...], each value positive and bounded (LIMITS)."""
    shapes = []
    for part in text.split(";"):
        values = _ints(part)
        if len(values) != 4:
            raise argparse.ArgumentTypeError(
                f"takes four values B,T,I,H per shape, got {part!r} ({len(values)})"
            )
        for name, value in zip("BTIH", values, strict=True):
            if not 1 <= value <= LIMITS[name]:
                raise argparse.ArgumentTypeError(
                    f"{part!r}: {name} must be in [1, {LIMITS[name]:,}], got {value}"
                )
        B, T, I, H = values
        if T * B * max(I, H) > MAX_ELEMENTS:
            raise argparse.ArgumentTypeError(
                f"{part!r}: T x B x max(I, H) must be at most {MAX_ELEMENTS:,} "
                f"(4 GiB of float32 per layer's activations)"
            )
        shapes.append((B, T, I, H))
    return shapes


def _lengths(text: str) -> list[int]:
    """--sweep-t: T1,T2,..., each in [1, LIMITS['T']]."""
    lengths = _ints(text)
    for T in lengths:
        if not 1 <= T <= LIMITS["T"]:
            raise argparse.ArgumentTypeError(
                f"each length must be in [1, {LIMITS['T']:,}], got {T}"
            )
    return lengths


def _bounded_int(low: int, high: int) -> Any:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in [{low}, {high:,}], got {value}")
        return value

    return convert


def _zoneout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a number, got {text!r}") from None
    if not 0.0 <= value < 1.0:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return value


def _check_names(args: argparse.Namespace) -> None:
    """Cells and backend checked before anything is measured."""
    if args.cells != "all":
        for cell in args.cells.split(","):
            if cell not in rnnlab.cell_names():
                raise unknown_name("cell", cell, rnnlab.cell_names())
    if args.backend not in BACKENDS:
        raise unknown_name("backend", args.backend, BACKENDS)


def _check_out(out: Path) -> None:
    """--out is a JSON file to write: a new path or a regular file, in a folder that is one."""
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name (e.g. {out / 'speed.json'})")
    if out.exists() and not out.is_file():
        raise ConfigError(f"--out {out} is not a regular file (a device or pipe); give a file name")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out {out}: {parent} is a file, not a folder")
            break


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    parser = _OneLineParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--cells", default="all", help="comma-separated cells (default: all)")
    parser.add_argument("--shapes", type=_shapes, default=None,
                        help=f"B,T,I,H[;B,T,I,H...] (each a positive integer, B up to "
                        f"{LIMITS['B']:,}, T up to {LIMITS['T']:,}, I and H up to "
                        f"{LIMITS['H']:,})")  # fmt: skip
    parser.add_argument("--backend", default="auto", help="auto, step, fused or torch")
    parser.add_argument("--repeats", type=_bounded_int(1, 1000), default=5,
                        help="timed runs per measurement, 1 to 1,000 (default: 5)")  # fmt: skip
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--out", type=Path, default=Path("bench/out/speed.json"))
    parser.add_argument(
        "--layer-norm", action="store_true", help="our cells with layer norm (torch's without)"
    )
    parser.add_argument("--zoneout", type=_zoneout, default=0.0, help="our cells with zoneout")
    parser.add_argument(
        "--sweep-t",
        type=_lengths,
        default=None,
        help="T1,T2,...: time forward+backward against T at B=32, I=88, H=256 instead",
    )
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default)")  # fmt: skip
    parser.add_argument("--device", default="cpu",
                        help="cpu (the default), cuda (or cuda:N), or auto (a GPU where torch "
                        "sees one)")  # fmt: skip
    args = parser.parse_args(argv)
    if not 0 <= args.threads <= 1024:
        parser.error(f"--threads must be in [0, 1024] (0: torch's default), got {args.threads}")
    _check_names(args)
    _check_out(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = resolve_device(args.device)
    if args.sweep_t:
        cells = (
            ["mingru", "minlstm", "gru", "lstm"] if args.cells == "all" else args.cells.split(",")
        )
        sweep_lengths(cells, args.sweep_t, 32, 88, 256, args.repeats)
        return
    cells = rnnlab.cell_names() if args.cells == "all" else args.cells.split(",")
    shapes = SHAPES if args.shapes is None else args.shapes
    options = {k: v for k, v in (("layer_norm", args.layer_norm), ("zoneout", args.zoneout)) if v}
    rows: list[dict[str, Any]] = []
    peak = matmul_peak(args.repeats)
    print(f"matrix-product peak: {peak:.0f} GFLOP/s (2048^2 float32 torch.mm)", file=sys.stderr)
    for shape in shapes:
        ref_mib: dict[str, float] = {}
        if not args.no_memory:
            for ref in ("torch:lstm", "torch:gru", "torch:rnn"):
                ref_mib[ref] = measure_memory(ref, shape, args.backend)
        for cell in cells:
            ref_name = {nn.LSTM: "torch:lstm", nn.GRU: "torch:gru", nn.RNN: "torch:rnn"}[
                torch_module(cell)
            ]
            row: dict[str, Any] = {
                "cell": cell,
                "shape": shape,
                "backend": args.backend,
                "reference": ref_name,
                "options": options,
            }
            # the cell and its reference in the same rounds: ratios under the same load
            row |= measure_pair(cell, ref_name, shape, args.backend, args.repeats, **options)
            row["matmul_ms"] = matmul_floor(cell, shape, args.repeats)
            row["fwd_bwd_ratio"] = row["fwd_bwd_ms"] / row["ref_fwd_bwd_ms"]
            row["forward_ratio"] = row["forward_ms"] / row["ref_forward_ms"]
            row["vs_matmul"] = row["fwd_bwd_ms"] / row["matmul_ms"]
            row["gflops"] = matmul_flops(cell, shape) / (row["fwd_bwd_ms"] / 1000) / 1e9
            row["forward_gflops"] = (
                matmul_flops(cell, shape, backward=False) / (row["forward_ms"] / 1000) / 1e9
            )
            row["ref_gflops"] = matmul_flops(ref_name, shape) / (row["ref_fwd_bwd_ms"] / 1000) / 1e9
            row["peak_gflops"] = peak
            if not args.no_memory:
                row["peak_mib"] = measure_memory(cell, shape, args.backend, **options)
                row["ref_peak_mib"] = ref_mib[ref_name]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    machine = platform.processor() or platform.machine()
    if DEVICE.type == "cuda":
        machine = torch.cuda.get_device_name(DEVICE)
    print(
        f"rnnlab {rnnlab.__version__}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {machine} ({DEVICE}), backend {args.backend}"
        + (f", options {options}" if options else "")
    )
    print(f"matrix-product peak (2048^2 float32 torch.mm): {peak:.0f} GFLOP/s; GFLOP/s counts the "
          "matrix products of a forward+backward (3 x 2 T B G*H (I + H))")  # fmt: skip
    print(
        "| shape (B,T,I,H) | cell | fwd ms | fwd ratio | fwd+bwd ms | ratio | GFLOP/s | "
        "% of peak | ref GFLOP/s | vs matmul | peak MiB | ref peak MiB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {','.join(map(str, r['shape']))} | {r['cell']} | {r['forward_ms']:.1f} | "
            f"{r['forward_ratio']:.2f} | {r['fwd_bwd_ms']:.1f} | {r['fwd_bwd_ratio']:.2f} | "
            f"{r['gflops']:.0f} | {100 * r['gflops'] / peak:.0f}% | {r['ref_gflops']:.0f} | "
            f"{r['vs_matmul']:.2f} | "
            f"{r.get('peak_mib', float('nan')):.0f} | {r.get('ref_peak_mib', float('nan')):.0f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"rows": rows, "threads": torch.get_num_threads(), "device": str(DEVICE),
               "machine": machine, "matmul_peak_gflops": peak}  # fmt: skip
    args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
