"""Print the tuning runs of results/*.json as a markdown table, best validation top-1 first per method."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    runs = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("*.json"))]
    runs.sort(key=lambda run: (run["method"], -run["validation_top1"]))
    print("| run | method | steps | overrides | validation top-1 | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for run in runs:
        overrides = " ".join(run["overrides"]) or "(config defaults)"
        print(
            f"| {run['name']} | {run['method']} | {run['steps']} | `{overrides}` "
            f"| {run['validation_top1']:.2f} | {run['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
