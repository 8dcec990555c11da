#!/usr/bin/env bash
# The GPU checks and benchmarks, in one run of under 10 minutes, for a machine with a CUDA GPU:
#   1. the tests marked `cuda` (tests/test_cuda.py and any other);
#   2. `squeeze-span bench --device cuda`: the shipped teacher with the default student at batch 256
#      and 1024, and the paper's setting (its CIFAR-10 generator, random, and a width-64 ResNet-18 on
#      32x32 RGB) at batch 1024;
#   3. benchmarks/gan.py --device cuda.
# Everything lands in $OUT (default /tmp/device_check): logs and the JSON files the benchmarks write.
#
# It needs python3 with a CUDA torch, and omegaconf, PyYAML, safetensors, tqdm, pillow, matplotlib and
# numpy; the package runs from src/ without installing. A machine without internet that lacks omegaconf
# (pure Python) takes it from a folder beside the checkout, made where it is installed:
#   mkdir -p .device-site && cp -r .venv/lib/python3.*/site-packages/omegaconf .device-site/
# and found through PYTHONPATH below. With the `device` tool: carry [".device-site"] and run
#   OUT=$OUT bash scripts/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD/.device-site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu rehearses the script on a machine without a GPU
status=0

if ! "$PYTHON" -c "import torch, omegaconf, squeeze_span; assert '$DEVICE' == 'cpu' or torch.cuda.is_available()" 2>"$OUT/import.log"; then
    echo "device_check: needs $PYTHON with a CUDA GPU in torch and the package's dependencies: $(tail -1 "$OUT/import.log")"
    exit 2
fi
{ nvidia-smi -L 2>/dev/null; "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } \
    | tee "$OUT/machine.txt"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, keep going on failure
    local name=$1 seconds=$2
    shift 2
    echo "== $name"
    timeout "$seconds" "$@" >"$OUT/$name.log" 2>&1
    local code=$?
    if [ $code -ne 0 ]; then
        echo "   FAILED (exit $code): see $name.log"
        status=1
    fi
    tail -n 4 "$OUT/$name.log"
}

step pytest_cuda 240 "$PYTHON" -m pytest -m cuda -q -rs -p no:cacheprovider tests
bench=("$PYTHON" -m squeeze_span.cli bench --device "$DEVICE" --steps 20 --warmup 5)
step bench_shipped_b256 90 "${bench[@]}" --batch 256 --json "$OUT/bench_shipped_b256.json"
step bench_shipped_b1024 90 "${bench[@]}" --batch 1024 --json "$OUT/bench_shipped_b1024.json"
step bench_paper_b1024 120 "${bench[@]}" --teacher cifar10-config --batch 1024 data.dataset=cifar10 model.width=64 \
    --json "$OUT/bench_paper_b1024.json"

# benchmarks/gan.py trains on Fashion-MNIST; random images in its files' format time the same.
"$PYTHON" - <<'EOF'
import gzip, struct
from pathlib import Path
import numpy as np
root = Path("/tmp/fashion_mnist_random"); root.mkdir(exist_ok=True)
rng = np.random.default_rng(0)
for prefix, count in [("train", 4096), ("t10k", 512)]:
    for kind, magic, array in [("images-idx3", 2051, rng.integers(0, 256, (count, 28, 28))), ("labels-idx1", 2049, rng.integers(0, 10, count))]:
        header = struct.pack(f">{1 + array.ndim}I", magic, *array.shape)
        (root / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))
EOF
step gan 120 "$PYTHON" benchmarks/gan.py --device "$DEVICE" --steps 64 --extra data.root=/tmp/fashion_mnist_random \
    --out "$OUT/gan_$DEVICE.json"
exit $status
