#!/usr/bin/env bash
# The GPU checks of issues 16 and 17, as one short script for a session that is lent a GPU
# (the `device` tool): the Triton kernels compiled against the step loop (every
# tests/test_gpu_*.py), the device tests, and the speed table against cuDNN in the same run.
# Writes everything under ${OUT:-bench/out/gpu}. Runs with the venv of the README's test command
# where there is one, else with the machine's python3 (the device machine's holds torch, Triton,
# numpy, scipy, safetensors, pytest) and rnnlab from src/ (the kernels, the GPU tests and
# `bench speed` import none of the dependencies that python3 may lack: optuna, pretty_midi).
#     run: bash bench/gpu_check.sh        (device tool, timeout_s 540)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench/out/gpu}
mkdir -p "$out"
if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; export PYTHONPATH=src; fi
export PYTHONUNBUFFERED=1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
$py -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name(0))" \
    | tee "$out/device.txt"
timeout 300 $py -m pytest -q -p no:cacheprovider -o addopts="" tests/test_gpu_*.py \
    tests/test_device.py tests/test_torch_backend.py > "$out/tests.txt" 2>&1
echo "tests rc=$?" | tee -a "$out/tests.txt"
tail -5 "$out/tests.txt"
timeout 200 $py -c 'import sys; from rnnlab.cli import main; sys.exit(main(sys.argv[1:]))' \
    bench speed --device cuda --no-memory --repeats 5 --shapes "32,100,88,256;64,500,128,512" \
    --out "$out/speed.json" > "$out/speed.md" 2> "$out/speed.err"
echo "bench rc=$?"
cat "$out/speed.md"
tail -3 "$out/speed.err"
