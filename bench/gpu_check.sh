#!/usr/bin/env bash
# The GPU checks of issues 16 and 17, as one short script for a session that is lent a GPU
# (the `device` tool): the Triton kernels compiled against the step loop, a run trained on the GPU
# evaluated and resumed on the CPU for every family, and the speed table against cuDNN.
# Writes everything under ${OUT:-bench/out/gpu}. Expects the venv of the README's test command.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench/out/gpu}
mkdir -p "$out"
py=.venv/bin/python
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
$py -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$out/device.txt"
$py -m pytest -q tests/test_gpu_kernels.py tests/test_device.py tests/test_torch_backend.py \
    > "$out/tests.txt" 2>&1; echo "tests rc=$?" | tee -a "$out/tests.txt"
.venv/bin/rnnlab bench speed --device cuda --no-memory --repeats 5 --shapes "32,100,88,256;64,500,128,512" \
    --out "$out/speed.json" > "$out/speed.md" 2> "$out/speed.err"; echo "bench rc=$?"
cat "$out/speed.md"
