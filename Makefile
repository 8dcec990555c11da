# The README's two commands. Each installs what is missing (scripts/setup.sh), then runs.
.PHONY: setup demo test test-slow

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/squeeze-span demo --json runs/demo/results.json

test: setup
	.venv/bin/python -m pytest -q

test-slow: setup
	.venv/bin/python -m pytest -q -m slow
