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

# The suite again on AVX2 kernels: a test that relies on one ISA's floats fails here first.
test-avx2: setup
	ATEN_CPU_CAPABILITY=avx2 .venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
