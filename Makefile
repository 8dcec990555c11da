# The README's two commands (demo, test). Each installs what is missing (scripts/setup.sh), then runs.
# CI (.ci/run) runs `make test`, then `make lint` and `make test-avx2`.
.PHONY: setup demo test test-slow test-avx2 lint

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/squeeze-span demo --json runs/demo/results.json

test: setup
	.venv/bin/python -m pytest -q

# The checks marked slow (over 10 s each: wheel builds, longer training); outside CI.
test-slow: setup
	.venv/bin/python -m pytest -q -m slow

# The suite again on AVX2 kernels, ATen's and oneDNN's: a test that relies on one ISA's floats, or code
# that trips an AVX2-only oneDNN kernel, fails here first on an AVX512 machine.
test-avx2: setup
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
