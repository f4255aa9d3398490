#!/usr/bin/env bash
# One prepared check on a CUDA machine (no internet): install carried wheels, run the test suite,
# a short CUDA training with resume, prediction on CUDA for every client's imagesTs (evaluated), and
# a short privacy audit on CUDA, and the step-time benchmark on CUDA at fp32 and bf16. Writes logs to $OUT.
# Usage: bash benchmarks/gpu_check.sh [--skip-tests] [--skip-bench]   (repository root, wheels in .whl/)
# Wheels: see the closing note of the training issue for how .whl/ was filled.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))" | tee "$OUT/env.txt"
case " $* " in *" --skip-tests "*) SKIP_TESTS=1;; *) SKIP_TESTS=0;; esac
case " $* " in *" --skip-bench "*) SKIP_BENCH=1;; *) SKIP_BENCH=0;; esac
if [ "$SKIP_TESTS" = 0 ]; then
  timeout 240 python3 -m pytest -q -x -p no:cacheprovider tests 2>&1 | tail -15 | tee "$OUT/tests.txt"
fi
W=/tmp/gpuwork; rm -rf $W
python3 -c "from preprocessing.commands.make_demo import main; raise SystemExit(main(['$W/raw', '--size', 'small']))" >/dev/null
python3 -c "from planners.commands.plan_and_preprocess import main; raise SystemExit(main(['--raw', '$W/raw', '--preprocessed', '$W/pp', '-d', '1', '2', '3', '--config', '2d', '--target', 'cpu']))" >/dev/null
T="from mucald_unet.commands.train import main; import sys; raise SystemExit(main(sys.argv[1:]))"
python3 -c "$T" -d 1 2 3 --preprocessed $W/pp --results $W/res --rounds 2 --iters 20 --device cuda 2>&1 | tail -12 | tee "$OUT/train.txt"
python3 -c "$T" -d 1 2 3 --preprocessed $W/pp --results $W/res --rounds 3 --iters 20 --device cuda --resume 2>&1 | tail -8 | tee -a "$OUT/train.txt"
P="from inference.commands.predict import main; import sys; raise SystemExit(main(sys.argv[1:]))"
E="from inference.commands.evaluate import main; import sys; raise SystemExit(main(sys.argv[1:]))"
for d in 1 2 3; do
  folder=$(ls -d $W/raw/Dataset00${d}_*)
  python3 -c "$P" -d $d -i "$folder/imagesTs" -o $W/pred/$d --preprocessed $W/pp --results $W/res --device cuda 2>&1 | tail -2 | tee -a "$OUT/predict.txt"
  python3 -c "$E" -ref "$folder/labelsTs" -pred $W/pred/$d -d $d --raw $W/raw 2>&1 | tail -6 | tee -a "$OUT/predict.txt"
done
A="from inference.commands.audit import main; import sys; raise SystemExit(main(sys.argv[1:]))"
python3 -c "$A" -d 3 -o $W/audit --preprocessed $W/pp --results $W/res --runs mucald --device cuda --private-cases 4 \
  --shadows 2 --decoder-steps 50 --whitebox-steps 50 2>&1 | grep -v "^$" | tail -8 | tee "$OUT/audit.txt"
[ "$SKIP_BENCH" = 1 ] || timeout 200 python3 -m benchmarks.train_step --size small --repeats 2 --iters 15 --device cuda --threads 4 --precisions fp32 bf16 2>&1 | tail -14 | tee "$OUT/train_step_cuda.txt"
