"""``squeeze-span report RESULTS_DIR --out DIR``: the tables, claims and figures of a sweep's results.

It reads every result a sweep wrote (``RESULTS_DIR/NAME/seedS.json``) and writes, in ``DIR``:

- ``REPORT.md``: one table per table of the paper (ours as mean ± std over seeds, beside the
  paper's CIFAR-10 number), the paper's claims, each marked **holds**, **does not hold** or
  **within noise**, the representation discrepancy, and the runs at equal wall-clock time;
- ``results.json``: every run, once per table it appears in: table, row, method, data, seed,
  steps, seconds, top1 (and fd, discrepancy, discrepancy_relative where measured);
- ``table2.png`` (Table 2's rows with error bars) and ``figure4.png`` (top-1 against the
  teacher's FD), when those rows exist.

A claim "a > b" holds when mean(a) - mean(b) exceeds twice its standard error,
sqrt(s_a^2 / n_a + s_b^2 / n_b), does not hold when it is below minus that, and is within
noise otherwise. A row with one seed takes the pooled seed std of the rows with several.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squeeze_span.errors import ConfigError
from squeeze_span.experiments import paper
from squeeze_span.fileio import atomic_write

TABLE_TITLES = {
    "1": "Table 1: representation transfer from different teachers",
    "2": "Table 2: against self-supervised learning on the same data",
    "3": "Table 3: ablations",
    "equal_time": "The main rows at equal wall-clock time",
    "figure4": "Figure 4: accuracy against the teacher's quality",
    "lr_validation": "Follow-up: the learning rate, scored on the validation split (not test)",
    "simsiam_rate": "Follow-up: SimSiam at its own rate, on test",
    "longer": "Follow-up: the main rows trained longer",
    "encoding": "Follow-up: what makes encoding beat vanilla latent distillation (claim 6)",
}
FINDINGS = "FINDINGS.md"  # the hand-written explanations beside a report, linked when present
DEFAULT_SEED_STD = 0.5  # when no row has two seeds: the spread two seeds showed in studies/demo_tuning


@dataclass
class Row:
    name: str  # the plan's entry name
    label: str
    results: list[dict]

    @property
    def top1s(self) -> list[float]:
        return [result["top1"] for result in self.results]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.top1s)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.top1s) if len(self.top1s) > 1 else None

    def cell(self) -> str:
        return mean_and_spread(self.top1s, 2)

    def average(self, key: str) -> float:
        return statistics.fmean(result.get(key, 0) for result in self.results)


@dataclass(frozen=True)
class Claim:
    text: str
    pairs: tuple[tuple[str, str], ...]  # (a, b): the claim is that a scores above b


CLAIMS = (
    Claim(
        "squeeze > VICReg-syn and SimSiam-syn (same generated images)",
        (("squeeze", "vicreg_syn"), ("squeeze", "simsiam_syn")),
    ),
    Claim(
        "squeeze and span > VICReg-mix and SimSiam-mix (same mix)",
        (("squeeze_span", "vicreg_mix"), ("squeeze_span", "simsiam_mix")),
    ),
    Claim("squeeze and span > VICReg-real", (("squeeze_span", "vicreg_real"),)),
    Claim(
        "squeeze > vanilla distillation, of G features and of w", (("squeeze", "g_vanilla"), ("w_squeeze", "w_vanilla"))
    ),
    Claim("D multi-feature > D single feature", (("d_multi", "d_single"),)),
    Claim(
        "encoding is the weakest latent row",
        tuple(
            (other, encode)
            for other in ("w_vanilla", "w_squeeze", "w_squeeze_span")
            for encode in ("encode_syn", "encode_syn_real")
        ),
    ),
    Claim(
        "row c (T_phi without L_var and L_cov) collapses: no better than an untrained backbone",
        (("random_init", "kd_squeeze_novar_nocov"),),
    ),
)


def mean_and_spread(values: Sequence[float], digits: int) -> str:
    """'mean ± std' over several values, the value alone for one."""
    spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.{digits}f}{spread}"


def load_results(results_dir: str | Path) -> list[dict]:
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ConfigError(f"{results_dir} is not a folder of sweep results; run `squeeze-span sweep PLAN.yaml` first")
    results = []
    for path in sorted(results_dir.glob("*/seed*.json")):
        try:
            results.append(json.loads(path.read_text()))
        except ValueError:
            raise ConfigError(f"{path} is not valid JSON; delete it and run the sweep again") from None
    if not results:
        raise ConfigError(f"{results_dir} holds no results (NAME/seedS.json); run `squeeze-span sweep PLAN.yaml` first")
    return results


def rows_of(results: Sequence[dict], table: str) -> list[Row]:
    """The rows of ``table``, in the order the sweep's entries first appear."""
    rows: dict[str, Row] = {}
    for result in results:
        label = result.get("tables", {}).get(table)
        if label is not None:
            rows.setdefault(result["name"], Row(result["name"], label, [])).results.append(result)
    return list(rows.values())


def all_rows(results: Sequence[dict]) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    for result in results:
        rows.setdefault(result["name"], Row(result["name"], result["name"], [])).results.append(result)
    return rows


def pooled_seed_std(rows: dict[str, Row]) -> tuple[float, str]:
    variances = [row.std**2 for row in rows.values() if row.std is not None]
    if not variances:
        return DEFAULT_SEED_STD, f"no row has two seeds; assumed {DEFAULT_SEED_STD} (studies/demo_tuning)"
    pooled = math.sqrt(statistics.fmean(variances))
    return pooled, f"pooled over the {len(variances)} rows with several seeds"


def compare(a: Row, b: Row, pooled_std: float) -> dict[str, Any]:
    """The verdict on "a > b" (see the module's docstring)."""
    std_a, std_b = (row.std if row.std is not None else pooled_std for row in (a, b))
    error = math.sqrt(std_a**2 / len(a.top1s) + std_b**2 / len(b.top1s))
    difference = a.mean - b.mean
    verdict = "holds" if difference > 2 * error else "does not hold" if difference < -2 * error else "within noise"
    return {
        "a": a.name,
        "b": b.name,
        "a_top1": a.mean,
        "b_top1": b.mean,
        "difference": difference,
        "margin": 2 * error,
        "verdict": verdict,
    }


def judge(claim: Claim, rows: dict[str, Row], pooled_std: float) -> dict[str, Any]:
    missing = sorted({name for pair in claim.pairs for name in pair} - set(rows))
    if missing:
        return {"claim": claim.text, "verdict": "not measured", "missing": missing, "comparisons": []}
    comparisons = [compare(rows[a], rows[b], pooled_std) for a, b in claim.pairs]
    verdicts = {comparison["verdict"] for comparison in comparisons}
    verdict = (
        "does not hold" if "does not hold" in verdicts else "within noise" if "within noise" in verdicts else "holds"
    )
    return {"claim": claim.text, "verdict": verdict, "comparisons": comparisons}


def build_report(results_dir: str | Path, out: str | Path, plan: str | Path | None = None) -> dict[str, Any]:
    """Write REPORT.md, results.json and the figures into ``out``; return the claims' verdicts.

    With the sweep's ``plan``, rows follow its entries' order, take its tables and labels, and the
    runs it lacks are listed.
    """
    from squeeze_span.eval.plots import accuracy_against_fd, bars_with_errors
    from squeeze_span.experiments.plan import load_plan, seeds_of

    results = load_results(results_dir)
    pending: list[str] = []
    if plan is not None:
        sweep_plan = load_plan(plan)
        entries = sweep_plan.entries
        order = {entry.name: index for index, entry in enumerate(entries)}
        results.sort(key=lambda result: (order.get(result["name"], len(order)), result["seed"]))
        # Tables and labels are presentation, not part of a result's spec: the plan's current ones win.
        tables = {entry.name: dict(entry.tables) for entry in entries}
        results = [{**result, "tables": tables.get(result["name"], result.get("tables", {}))} for result in results]
        done = {(result["name"], result["seed"]) for result in results}
        pending = [
            f"{entry.name} seed {seed}"
            for entry in entries
            for seed in seeds_of(sweep_plan, entry)
            if (entry.name, seed) not in done
        ]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = all_rows(results)
    pooled_std, pooled_how = pooled_seed_std(rows)
    claims = [judge(claim, rows, pooled_std) for claim in CLAIMS]

    records = [
        {
            "table": table,
            "row": label,
            "name": result["name"],
            "method": result.get("method"),
            "data": result.get("data"),
            "seed": result["seed"],
            "steps": result.get("steps"),
            "seconds": result.get("seconds"),
            "top1": result["top1"],
            **{key: result[key]["value"] for key in ("fd", "discrepancy") if key in result},
            **(
                {"discrepancy_relative": result["discrepancy"]["relative"]}
                if "relative" in result.get("discrepancy", {})
                else {}
            ),
        }
        for result in results
        for table, label in result.get("tables", {}).items()
    ]
    with atomic_write(out / "results.json") as temporary:
        temporary.write_text(json.dumps({"runs": records, "claims": claims}, indent=2) + "\n")

    table2 = rows_of(results, "2")
    if table2:
        bars = [(row.label, row.mean, row.std or 0.0) for row in table2]
        bars_with_errors(
            bars, out / "table2.png", title="Table 2 rows (mean ± std over seeds)", floor=min(m for _, m, _ in bars) - 5
        )
    figure4 = [row for row in rows_of(results, "figure4") if all("fd" in result for result in row.results)]
    if figure4:
        points = [(row.results[0]["fd"]["value"], row.mean, row.label) for row in figure4]
        baselines = [
            (rows[name].mean, label)
            for name, label in (("vicreg_real", "VICReg, real"), ("vicreg_mix", "VICReg, mix"))
            if name in rows
        ]
        accuracy_against_fd(
            points,
            out / "figure4.png",
            metric=figure4[0].results[0]["fd"]["metric"],
            baselines=baselines,
            errors=[pooled_std if row.std is None else row.std for row in figure4],
            title=f"error bars: the seeds' std (one seed: the pooled {pooled_std:.2f})",
        )

    markdown = render_markdown(
        results, rows, claims, pooled_std, pooled_how, bool(figure4), pending, (out / FINDINGS).is_file()
    )
    with atomic_write(out / "REPORT.md") as temporary:
        temporary.write_text(markdown)
    return {"claims": claims, "runs": len(results), "pending": pending}


def render_markdown(
    results: Sequence[dict],
    rows: dict[str, Row],
    claims: list[dict],
    pooled_std: float,
    pooled_how: str,
    has_figure4: bool,
    pending: Sequence[str] = (),
    has_findings: bool = False,
) -> str:
    lines = ["# Reproduction report", ""]
    machines = sorted({result.get("machine", "?") for result in results})
    dates = sorted({result.get("date", "?") for result in results})
    lines += [f"{len(results)} runs, {dates[0]} to {dates[-1]}, on: {'; '.join(machines)}."]
    if not any("cuda" in machine.lower() or "gpu" in machine.lower() for machine in machines):
        lines.append("Every run is on CPU: no GPU was at hand, so none of the rows was trained longer on one.")
    if pending:
        lines.append(f"**Not run yet** ({len(pending)} of the plan's runs): {', '.join(pending)}.")
    if has_findings:
        lines.append(
            f"Where the results depart from the paper, [{FINDINGS}]({FINDINGS}) explains why, "
            "with the runs that test it."
        )
    lines.append("")
    lines += ["## The paper's claims", ""]
    lines += [
        f"Seed noise: std {pooled_std:.2f} points ({pooled_how}). "
        "A claim holds when the difference exceeds twice its standard error.",
        "",
    ]
    for number, claim in enumerate(claims, 1):
        lines.append(f"{number}. {claim['claim']}: **{claim['verdict']}**")
        for comparison in claim.get("comparisons", []):
            lines.append(
                f"   - {comparison['a']} {comparison['a_top1']:.2f} vs {comparison['b']} {comparison['b_top1']:.2f}: "
                f"{comparison['difference']:+.2f} (margin ±{comparison['margin']:.2f}): {comparison['verdict']}"
            )
        if claim.get("missing"):
            lines.append(f"   - not run: {', '.join(claim['missing'])}")
    lines.append("")
    for table, title in TABLE_TITLES.items():
        table_rows = rows_of(results, table)
        if not table_rows:
            continue
        lines += [
            f"## {title}",
            "",
            "| row | top-1 (ours) | seeds | steps | minutes | CIFAR-10 (paper) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for row in table_rows:
            reference = paper.CIFAR10_TOP1.get(row.name)
            lines.append(
                f"| {row.label} | {row.cell()} | {len(row.results)} | {row.average('steps'):.0f} | "
                f"{row.average('seconds') / 60:.1f} | {'' if reference is None else f'{reference:.2f}'} |"
            )
        if table == "2":
            lines += ["", "![Table 2](table2.png)"]
        if table == "figure4" and has_figure4:
            lines += ["", "| row | teacher FD | top-1 |", "| --- | --- | --- |"]
            for row in table_rows:
                fd = row.results[0].get("fd", {})
                lines.append(
                    f"| {row.label} | {fd.get('value', float('nan')):.2f} ({fd.get('metric', '')}) | {row.cell()} |"
                )
            lines += ["", "![Figure 4](figure4.png)"]
        lines.append("")
    discrepancy = [row for row in rows.values() if all("discrepancy" in result for result in row.results)]
    if discrepancy:
        measure = discrepancy[0].results[0]["discrepancy"]
        lines += [
            "## Representation discrepancy",
            "",
            f"{measure['measure']}: {measure['images']} generated images (the run's teacher) against "
            f"{measure['images']} real train images. FD carries the square of the features' scale, "
            "which differs between methods, so it is also given relative to the real features' total "
            "variance (FD / trace of their covariance).",
            "",
            "| run | discrepancy (FD) | relative | top-1 |",
            "| --- | --- | --- | --- |",
        ]
        for row in discrepancy:
            cells = [
                mean_and_spread([result["discrepancy"][key] for result in row.results], digits)
                if all(key in result["discrepancy"] for result in row.results)
                else ""
                for key, digits in (("value", 3), ("relative", 4))
            ]
            lines.append(f"| {row.name} | {cells[0]} | {cells[1]} | {row.cell()} |")
        lines.append("")
    return "\n".join(lines)
