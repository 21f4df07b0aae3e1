#!/usr/bin/env bash
# The GPU figures benchmarks/RESULTS.md asks for, in one run on a CUDA machine: 10 epochs
# of batch-64 MNIST (10 rounds of 859 steps over the 55,000 training images) for ours and
# the two Flax-example loops, with compile and eval times, for `original` and
# `relu_maxpool`. PyTorch is skipped, eager and compiled (its reference runs on the CPU).
#
# A lent device machine's image has JAX with CUDA, Flax, Optax and Orbax but no
# TensorFlow, which TFDS needs; so write the arrays where TFDS works and carry the file:
#   .venv/bin/python benchmarks/train_throughput.py --save-arrays mnist.npz   # 12 MB
#   then, there: bash benchmarks/gpu_check.sh   (ARRAYS=elsewhere.npz, STEPS=, ROUNDS= to
#   change the defaults; PYTHON= for another interpreter)
# Results go to $OUT if set (the device tool's folder), else gpu_results/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_results}
mkdir -p "$out"
python=${PYTHON:-python3}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  "$python" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
} | tee "$out/gpu.txt"
for preset in original relu_maxpool; do
  "$python" benchmarks/train_throughput.py --arrays "${ARRAYS:-mnist.npz}" --preset "$preset" \
    --steps "${STEPS:-859}" --repeats "${ROUNDS:-10}" --skip torch torch-compile --json "$out/$preset.json" 2>&1 | tee "$out/$preset.txt"
done
