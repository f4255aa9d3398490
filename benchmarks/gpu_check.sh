#!/usr/bin/env bash
# One prepared check on a CUDA machine (no internet): install carried wheels, run the test suite,
# a short CUDA training with resume, and the step-time benchmark on CUDA. Writes logs to $OUT.
# Usage: bash benchmarks/gpu_check.sh [--skip-tests]   (from the repository root, wheels in .whl/)
# Wheels: see the closing note of the training issue for how .whl/ was filled.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))" | tee "$OUT/env.txt"
if [ "${1:-}" != "--skip-tests" ]; then
  timeout 240 python3 -m pytest -q -x -p no:cacheprovider tests 2>&1 | tail -15 | tee "$OUT/tests.txt"
fi
W=/tmp/gpuwork; rm -rf $W
python3 -c "from preprocessing.commands.make_demo import main; raise SystemExit(main(['$W/raw', '--size', 'small']))" >/dev/null
python3 -c "from planners.commands.plan_and_preprocess import main; raise SystemExit(main(['--raw', '$W/raw', '--preprocessed', '$W/pp', '-d', '1', '2', '3', '--config', '2d', '--target', 'cpu']))" >/dev/null
T="from mucald_unet.commands.train import main; import sys; raise SystemExit(main(sys.argv[1:]))"
python3 -c "$T" -d 1 2 3 --preprocessed $W/pp --results $W/res --rounds 2 --iters 20 --device cuda 2>&1 | tail -12 | tee "$OUT/train.txt"
python3 -c "$T" -d 1 2 3 --preprocessed $W/pp --results $W/res --rounds 3 --iters 20 --device cuda --resume 2>&1 | tail -8 | tee -a "$OUT/train.txt"
timeout 200 python3 -m benchmarks.train_step --size small --repeats 2 --iters 15 --device cuda --threads 4 2>&1 | tail -14 | tee "$OUT/train_step_cuda.txt"
