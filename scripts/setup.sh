#!/usr/bin/env bash
# Installs squeeze-span into .venv in this checkout, on a fresh machine.
#  1. torch==2.13.0 first, when no torch is importable: a bare `torch` requirement
#     would pull the registry's newest build with several GB of CUDA packages.
#  2. the package itself, editable, with its test extras (and its dependencies: umap-learn
#     for figure2, with scikit-learn, numba and llvmlite).
#  3. Debian's Fashion-MNIST, the real dataset the default jobs use.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
# --system-site-packages: reuse a torch that the machine already has.
[ -x .venv/bin/python ] || "$python" -m venv --system-site-packages .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "setup: installing torch==2.13.0 (CPU build)"
    .venv/bin/python -m pip install -q torch==2.13.0
fi
if ! .venv/bin/python -c "import squeeze_span, pytest, umap" 2>/dev/null || [ pyproject.toml -nt .venv/.installed ]; then
    echo "setup: installing squeeze-span with its test extras"
    .venv/bin/python -m pip install -q -e '.[test]'
    touch .venv/.installed
fi

fashion_mnist=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -e "$fashion_mnist" ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "setup: installing Debian's dataset-fashion-mnist"
        apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
    else
        echo "setup: Fashion-MNIST is missing; run 'sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist'" \
             "(or pass --data with the IDX files)" >&2
    fi
fi
