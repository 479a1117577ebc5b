#!/bin/bash
# Run on the GPU device machine from the repo root (wheels for what its image lacks in .whl/):
#   torchao, torch-pruning, pydantic(-core), annotated-types/-doc, typing-inspection (cp312).
# One prepared GPU check: the gpu-marked tests, then profile/optimize/compress on CUDA.
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 9
export PYTHONPATH=$PWD/src:$PWD:/tmp/site MPLBACKEND=Agg
W() { python3 -c "import sys; from wattwise.cli import main; sys.argv=['wattwise']+sys.argv[1:]; main()" "$@"; }
{
nvidia-smi --query-gpu=name,driver_version,power.limit,power.min_limit,power.max_limit --format=csv
python3 -c "import torch, torchao, pydantic, transformers; print('torch', torch.__version__, 'torchao', torchao.__version__, 'transformers', transformers.__version__, torch.cuda.is_available())"
date
timeout 300 python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" -rfE --tb=short --durations=8 \
  tests/sweep/test_sweep.py tests/train/test_trainer_features.py tests/measure/test_profile.py \
  tests/compress/test_quantize_gpu.py tests/compress/test_prune_unstructured.py
echo "pytest rc=$?"; date
timeout 60 bash -c 'W() { python3 -c "import sys; from wattwise.cli import main; sys.argv=[\"wattwise\"]+sys.argv[1:]; main()" "$@"; }; W profile digits-cnn --device cuda --batch-sizes 1,256 --json' > $OUT/profile.json
echo "profile rc=$?"; date
timeout 170 bash -c 'W() { python3 -c "import sys; from wattwise.cli import main; sys.argv=[\"wattwise\"]+sys.argv[1:]; main()" "$@"; }; W optimize digits-cnn --device cuda --budget "accuracy_drop<=0.01" --objective throughput --batch-size 256 --time-limit 120s --out /tmp/opt --json' > $OUT/optimize.json
echo "optimize rc=$?"; date
cp /tmp/opt/index.html $OUT/ 2>/dev/null; cat /root/.cache/wattwise/logs/*.log 2>/dev/null | tail -60
} 2>&1 | tee $OUT/log.txt
