"""The allocator setting, A/B: ``squeeze-span bench`` with glibc's malloc as it starts, and as the CLI tunes it.

The CLI keeps freed memory in glibc's heap (``squeeze_span.allocator.keep_freed_memory``);
``SQUEEZE_SPAN_ALLOCATOR=system`` leaves malloc alone. A process cannot undo the setting once
its heap holds memory, so each setting runs the bench in its own process, in turns, and
every case's images/s is the median over the rounds. Writes benchmarks/results/allocator.json.

    python benchmarks/allocator.py [--rounds 2] [-- bench options, e.g. --batch 128]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("student", "vicreg", "step", "pool_step", "teacher", "augment")
SETTINGS = {"system": {"SQUEEZE_SPAN_ALLOCATOR": "system"}, "kept": {}}


def bench_once(environment: dict[str, str], options: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "bench.json"
        command = [sys.executable, "-m", "squeeze_span.cli", "bench", "--json", str(out), *options]
        env = {key: value for key, value in os.environ.items() if key != "SQUEEZE_SPAN_ALLOCATOR"}
        subprocess.run(command, check=True, env={**env, **environment}, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "allocator.json"))
    parser.add_argument("bench_options", nargs="*", help="passed to squeeze-span bench (after --)")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for round_index in range(args.rounds):
        order = list(SETTINGS) if round_index % 2 == 0 else list(reversed(SETTINGS))
        for name in order:
            runs[name].append(bench_once(SETTINGS[name], args.bench_options))
            print(f"round {round_index + 1}: {name} done", flush=True)
    medians = {
        name: {case: statistics.median(run[f"{case}_img_s"] for run in results) for case in CASES}
        for name, results in runs.items()
    }
    for results in medians.values():
        results["step_vs_vicreg"] = results["step"] / results["vicreg"]
        results["pool_step_vs_vicreg"] = results["pool_step"] / results["vicreg"]
    summary = {
        "img_s": medians,
        "kept_over_system": {case: medians["kept"][case] / medians["system"][case] for case in CASES},
        "allocator": {name: results[0]["machine"]["allocator"] for name, results in runs.items()},
        "machine": runs["kept"][0]["machine"],
        "rounds": args.rounds,
        "bench_options": args.bench_options,
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'case':<12}{'system':>10}{'kept':>10}{'kept/system':>13}")
    for case in CASES:
        system, kept = medians["system"][case], medians["kept"][case]
        print(f"{case:<12}{system:>10.1f}{kept:>10.1f}{kept / system:>13.3f}")
    for name in SETTINGS:
        print(
            f"{name}: squeeze and span / VICReg {medians[name]['step_vs_vicreg']:.3f} on the fly, "
            f"{medians[name]['pool_step_vs_vicreg']:.3f} from a pool"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
