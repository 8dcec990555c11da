"""``squeeze-span report RESULTS_DIR --out DIR``: the tables, claims and figures of a sweep's results.

It reads every result a sweep wrote (``RESULTS_DIR/NAME/seedS.json``) and writes, in ``DIR``:

- ``REPORT.md``: one table per table of the paper (ours as mean ± std over seeds, beside the
  paper's CIFAR-10 number), the paper's claims, each marked **holds**, **does not hold** or
  **within noise**, what each variant's setting moves, the representation discrepancy, and the
  runs at equal wall-clock time;
- ``results.json``: every run, once per table it appears in: table, row, method, data, seed,
  steps, seconds, top1, its top-1 under each probe protocol it measured (and fd, discrepancy,
  discrepancy_relative where measured); every claim's verdict with the numbers behind it; and
  what each variant's setting moves (a row with a variant, such as fp32, against its default row);
- ``table2.png`` (Table 2's rows with error bars), ``figure4.png`` (top-1 against the
  teacher's FD) and ``length.png`` (each claim's difference against training length, per
  protocol), when those rows exist.

The claims are judged for each group of comparable rows (one training length and variant; the
untrained rows join every group) and each probe protocol the rows measured, by
:func:`squeeze_span.experiments.comparison.compare_samples` (Welch's t-test at 95% with several
seeds a side); the claims of one group and protocol are also judged as a family, with Holm's
correction (:func:`squeeze_span.experiments.comparison.holm_adjusted`).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squeeze_span.errors import ConfigError
from squeeze_span.experiments import paper
from squeeze_span.experiments.comparison import (
    combine,
    compare_samples,
    family_verdict,
    holm_adjusted,
    mean_and_spread,
    pooled_std,
)
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
    "floors": "The floors and the ceiling, in every probe protocol",
    "length": "The main rows by training length, in every probe protocol",
}
FINDINGS = "FINDINGS.md"  # the hand-written explanations beside a report, linked when present
DEFAULT_SEED_STD = 0.5  # when no row has two seeds: the spread two seeds showed in studies/demo_tuning


# The probe protocols a result may carry, by the key the report uses: the linear probe on every
# label (the result's top1), on N labels per class (few_labels), the weighted kNN (knn).
LINEAR = "linear"


def protocol_value(result: dict, protocol: str) -> float | None:
    """The result's top-1 under ``protocol`` ("linear", "linear_10", "knn_20", ...); None if not measured."""
    if protocol == LINEAR:
        return result.get("top1")
    family, _, size = protocol.partition("_")
    source = {"linear": "few_labels", "knn": "knn"}.get(family)
    return result.get(source, {}).get(size, {}).get("top1") if source else None


def protocol_label(protocol: str) -> str:
    if protocol == LINEAR:
        return "linear, all labels"
    family, _, size = protocol.partition("_")
    return f"linear, {size}/class" if family == "linear" else f"kNN, k={size}"


def protocols_in(results: Sequence[dict]) -> list[str]:
    """Every protocol some result carries: all labels, then fewer and fewer labels, then kNN by k."""
    few = {int(n) for result in results for n in result.get("few_labels", {})}
    knn = {int(k) for result in results for k in result.get("knn", {})}
    return [LINEAR, *(f"linear_{n}" for n in sorted(few, reverse=True)), *(f"knn_{k}" for k in sorted(knn))]


@dataclass
class Row:
    name: str  # the plan's entry name
    label: str
    results: list[dict]
    key: str = ""  # the claims' name for the row (the plan's ``row``); "": the entry's name
    variant: str = ""  # the setting that sets it apart ("fp32"); claims compare rows of one variant

    @property
    def claim_name(self) -> str:
        return self.key or self.name

    @property
    def top1s(self) -> list[float]:
        return self.values(LINEAR)

    def values(self, protocol: str) -> list[float]:
        """One value per seed under ``protocol``; empty unless every seed measured it."""
        values = [protocol_value(result, protocol) for result in self.results]
        return [] if None in values else values

    @property
    def mean(self) -> float:
        return statistics.fmean(self.top1s)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.top1s) if len(self.top1s) > 1 else None

    @property
    def steps(self) -> int:
        """The row's training length (the median over seeds: a time budget gives each its own)."""
        return round(statistics.median(result.get("steps") or 0 for result in self.results))

    def cell(self, protocol: str = LINEAR) -> str:
        values = self.values(protocol)
        return mean_and_spread(values, 2) if values else ""

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


@dataclass(frozen=True)
class RowInfo:
    """How the plan says to read an entry's results: its claims' name and its variant."""

    key: str = ""
    variant: str = ""


def rows_of(results: Sequence[dict], table: str, info: dict[str, RowInfo] | None = None) -> list[Row]:
    """The rows of ``table``, in the order the sweep's entries first appear."""
    rows: dict[str, Row] = {}
    for result in results:
        label = result.get("tables", {}).get(table)
        if label is not None:
            row = rows.setdefault(result["name"], _row(result["name"], label, info))
            row.results.append(result)
    return list(rows.values())


def all_rows(results: Sequence[dict], info: dict[str, RowInfo] | None = None) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    for result in results:
        rows.setdefault(result["name"], _row(result["name"], result["name"], info)).results.append(result)
    return rows


def _row(name: str, label: str, info: dict[str, RowInfo] | None) -> Row:
    row_info = (info or {}).get(name, RowInfo())
    return Row(name, label, [], row_info.key, row_info.variant)


def claim_groups(rows: dict[str, Row]) -> dict[tuple[int, str], dict[str, Row]]:
    """The rows that claims may compare, by (training length, variant), each under its claims' name.

    A row that did not train (a floor, a discriminator) belongs to every group, and to a group of
    its own (length 0) for the claims between untrained rows alone; two trained rows are compared
    only at the same length and variant.
    """
    untrained = {row.claim_name: row for row in rows.values() if row.steps == 0}
    groups: dict[tuple[int, str], dict[str, Row]] = {(0, ""): dict(untrained)} if untrained else {}
    for row in rows.values():
        if row.steps > 0:
            groups.setdefault((row.steps, row.variant), dict(untrained))[row.claim_name] = row
    return dict(sorted(groups.items(), key=lambda item: (item[0][1] != "", item[0][1], item[0][0])))


def group_title(steps: int, variant: str) -> str:
    return ", ".join(part for part in (f"{steps} steps" if steps else "untrained", variant) if part)


def pooled_stds(rows: dict[str, Row], protocols: Sequence[str]) -> dict[str, tuple[float, str]]:
    """Per protocol: the pooled seed std of the trained rows with several seeds (of every row, where no
    trained row has two), and how it was found. An untrained backbone's seed draws its random features,
    a spread unlike a trained one's, so it would misstate the noise of the comparisons between methods."""
    pooled = {}
    for protocol in protocols:
        samples = [row.values(protocol) for row in rows.values() if row.steps > 0]
        kind = "trained rows"
        if pooled_std(samples) is None:
            samples, kind = [row.values(protocol) for row in rows.values()], "rows"
        std = pooled_std(samples)
        count = sum(len(values) > 1 for values in samples)
        pooled[protocol] = (
            (std, f"pooled over the {count} {kind} with several seeds")
            if std is not None
            else (DEFAULT_SEED_STD, f"no row has two seeds; assumed {DEFAULT_SEED_STD} (studies/demo_tuning)")
        )
    return pooled


def judge(claim: Claim, rows: dict[str, Row], protocol: str, fallback_std: float) -> dict[str, Any]:
    """The claim in one group of rows under one protocol, from the pairs measured there."""
    measured = [(a, b) for a, b in claim.pairs if rows.get(a) and rows.get(b)]
    measured = [(a, b) for a, b in measured if rows[a].values(protocol) and rows[b].values(protocol)]
    missing = sorted({name for pair in claim.pairs for name in pair} - set(rows))
    if not measured:
        return {"claim": claim.text, "protocol": protocol, "verdict": "not measured", "missing": missing}
    comparisons = [
        compare_samples(rows[a].values(protocol), rows[b].values(protocol), fallback_std, a_name=a, b_name=b)
        for a, b in measured
    ]
    verdict = combine([comparison["verdict"] for comparison in comparisons])
    return {
        "claim": claim.text,
        "protocol": protocol,
        "verdict": verdict,
        "comparisons": comparisons,
        "missing": missing,
    }


def judge_all(rows: dict[str, Row], protocols: Sequence[str]) -> list[dict[str, Any]]:
    """Every claim, in every group of comparable rows, under every protocol that group measured."""
    pooled = pooled_stds(rows, protocols)
    verdicts = []
    for (steps, variant), group in claim_groups(rows).items():
        trained = {name for name, row in group.items() if row.steps > 0}
        judged = []
        for number, claim in enumerate(CLAIMS, 1):
            names = {name for pair in claim.pairs for name in pair}
            if steps > 0 and not names & trained:
                continue  # between untrained rows only: judged once, in the untrained group
            for protocol in protocols:
                verdict = judge(claim, group, protocol, pooled[protocol][0])
                if verdict["verdict"] != "not measured" or protocol == LINEAR:
                    judged.append({"number": number, "steps": steps, "variant": variant, **verdict})
        if any(verdict["verdict"] != "not measured" for verdict in judged):
            for protocol in protocols:
                judge_family([verdict for verdict in judged if verdict["protocol"] == protocol])
            verdicts += judged
    return verdicts


def judge_family(claims: Sequence[dict]) -> None:
    """Add to each comparison of ``claims`` (one group, one protocol) with a Welch p-value its Holm-adjusted
    p (``p_family``) and verdict (``verdict_family``), and to each claim its verdict at the family's 95%."""
    family = [
        comparison for claim in claims for comparison in claim.get("comparisons", ()) if comparison["p"] is not None
    ]
    if len(family) < 2:
        return
    for comparison, adjusted in zip(family, holm_adjusted([comparison["p"] for comparison in family]), strict=True):
        comparison.update(p_family=adjusted, verdict_family=family_verdict(comparison["difference"], adjusted))
    for claim in claims:
        members = [comparison for comparison in claim.get("comparisons", ()) if "verdict_family" in comparison]
        if members and len(members) == len(claim["comparisons"]):
            claim["verdict_family"] = combine([comparison["verdict_family"] for comparison in members])


def variant_effects(rows: dict[str, Row], protocols: Sequence[str]) -> list[dict[str, Any]]:
    """What each variant's setting moves: every row with a variant ("fp32") against the default row it
    varies (the same claims' name and length), under each protocol both measured, compared as claims
    are (:func:`compare_samples`)."""
    pooled = pooled_stds(rows, protocols)
    defaults = {(row.claim_name, row.steps): row for row in rows.values() if not row.variant and row.steps > 0}
    effects = []
    for row in rows.values():
        default = defaults.get((row.claim_name, row.steps))
        if not row.variant or default is None:
            continue
        for protocol in protocols:
            if row.values(protocol) and default.values(protocol):
                comparison = compare_samples(
                    row.values(protocol),
                    default.values(protocol),
                    pooled[protocol][0],
                    a_name=row.name,
                    b_name=default.name,
                )
                effects.append({"variant": row.variant, "steps": row.steps, "protocol": protocol, **comparison})
    return effects


def build_report(results_dir: str | Path, out: str | Path, plan: str | Path | None = None) -> dict[str, Any]:
    """Write REPORT.md, results.json and the figures into ``out``; return the claims' verdicts.

    With the sweep's ``plan``, rows follow its entries' order, take its tables, labels, claims'
    names and variants, and the runs it lacks are listed.
    """
    results = load_results(results_dir)
    results, info, pending, primary = _apply_plan(results, plan)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = all_rows(results, info)
    protocols = protocols_in(results)
    claims = judge_all(rows, protocols)
    variants = variant_effects(rows, protocols)
    records = {"runs": run_records(results, protocols), "claims": claims, "variants": variants}
    with atomic_write(out / "results.json") as temporary:
        temporary.write_text(json.dumps(records, indent=2) + "\n")
    figures = draw_figures(results, rows, claims, protocols, out, info)
    context = ReportContext(
        results, rows, claims, protocols, primary, figures, pending, (out / FINDINGS).is_file(), variants
    )
    with atomic_write(out / "REPORT.md") as temporary:
        temporary.write_text(render_markdown(context, info))
    return {"claims": claims, "runs": len(results), "pending": pending, "primary": measured_primary(claims, primary)}


def measured_primary(claims: Sequence[dict], primary: str) -> str:
    """The primary protocol, or the full linear probe when no claim was judged in it."""
    return primary if any(claim["protocol"] == primary for claim in claims) else LINEAR


def _apply_plan(results: list[dict], plan: str | Path | None) -> tuple[list[dict], dict[str, RowInfo], list[str], str]:
    """The results in the plan's order with its tables and labels, how it reads each row, the runs it
    lacks, and its primary protocol; without a plan, the results as they are."""
    from squeeze_span.experiments.plan import load_plan, row_of, seeds_of

    if plan is None:
        return results, {}, [], LINEAR
    sweep_plan = load_plan(plan)
    entries = sweep_plan.entries
    order = {entry.name: index for index, entry in enumerate(entries)}
    results = sorted(results, key=lambda result: (order.get(result["name"], len(order)), result["seed"]))
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
    info = {entry.name: RowInfo(row_of(entry), entry.variant) for entry in entries}
    return results, info, pending, sweep_plan.primary_protocol


def run_records(results: Sequence[dict], protocols: Sequence[str]) -> list[dict[str, Any]]:
    """Every run, once per table it appears in, with its top-1 under each protocol it measured."""
    records = []
    for result in results:
        measured = {protocol: protocol_value(result, protocol) for protocol in protocols}
        extra = {key: result[key]["value"] for key in ("fd", "discrepancy") if key in result}
        if "relative" in result.get("discrepancy", {}):
            extra["discrepancy_relative"] = result["discrepancy"]["relative"]
        for table, label in result.get("tables", {}).items():
            records.append(
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
                    "protocols": {key: value for key, value in measured.items() if value is not None},
                    **extra,
                }
            )
    return records


def draw_figures(
    results: Sequence[dict],
    rows: dict[str, Row],
    claims: Sequence[dict],
    protocols: Sequence[str],
    out: Path,
    info: dict[str, RowInfo],
) -> set[str]:
    """table2.png, figure4.png and length.png, for those whose rows exist; the names of those drawn."""
    from squeeze_span.eval.plots import accuracy_against_fd, bars_with_errors, differences_against_length

    drawn = set()
    table2 = rows_of(results, "2", info)
    if table2:
        bars = [(row.label, row.mean, row.std or 0.0) for row in table2]
        floor = min(mean for _, mean, _ in bars) - 5
        bars_with_errors(bars, out / "table2.png", title="Table 2 rows (mean ± std over seeds)", floor=floor)
        drawn.add("table2.png")
    figure4 = [row for row in rows_of(results, "figure4", info) if all("fd" in result for result in row.results)]
    if figure4:
        pooled = pooled_stds(rows, [LINEAR])[LINEAR][0]
        baselines = [(rows[name].mean, label) for name, label in FIGURE4_BASELINES if name in rows]
        accuracy_against_fd(
            [(row.results[0]["fd"]["value"], row.mean, row.label) for row in figure4],
            out / "figure4.png",
            metric=figure4[0].results[0]["fd"]["metric"],
            baselines=baselines,
            errors=[pooled if row.std is None else row.std for row in figure4],
            title=f"error bars: the seeds' std (one seed: the pooled {pooled:.2f})",
        )
        drawn.add("figure4.png")
    curves = length_curves(claims, protocols)
    if curves:
        differences_against_length(curves, out / "length.png")
        drawn.add("length.png")
    return drawn


FIGURE4_BASELINES = (("vicreg_real", "VICReg, real"), ("vicreg_mix", "VICReg, mix"))


def length_curves(claims: Sequence[dict], protocols: Sequence[str]) -> dict[str, dict[tuple[str, str], list]]:
    """For each comparison measured at two lengths or more in the default variant: per (protocol,
    variant), the (steps, difference, standard error) points, the other variants' ("fp32") beside the
    default's; {} when no comparison was."""
    curves: dict[str, dict[tuple[str, str], list]] = {}
    for claim in claims:
        if claim["steps"] == 0:
            continue
        for comparison in claim.get("comparisons", []):
            title = f"claim {claim['number']}: {comparison['a']} − {comparison['b']}"
            point = (claim["steps"], comparison["difference"], comparison["standard_error"])
            line = (protocol_label(claim["protocol"]), claim["variant"])
            curves.setdefault(title, {}).setdefault(line, []).append(point)
    labels = {protocol_label(p) for p in protocols}

    def drawn(lines: dict[tuple[str, str], list]) -> bool:
        lengths = max((len(points) for (_, variant), points in lines.items() if not variant), default=0)
        return lengths > 1 and {label for label, _ in lines} <= labels

    # the default variant's lines first, so that the colours follow the protocols' order
    return {
        title: dict(sorted(lines.items(), key=lambda item: item[0][1] != ""))
        for title, lines in curves.items()
        if drawn(lines)
    }


@dataclass
class ReportContext:
    results: Sequence[dict]
    rows: dict[str, Row]
    claims: list[dict]
    protocols: list[str]
    primary: str
    figures: set[str]
    pending: Sequence[str] = ()
    has_findings: bool = False
    variants: Sequence[dict] = ()


def render_markdown(context: ReportContext, info: dict[str, RowInfo] | None = None) -> str:
    lines = render_header(context)
    lines += render_claims(context)
    lines += render_variants(context.variants, context.protocols)
    for table, title in TABLE_TITLES.items():
        lines += render_table(context, table, title, info)
    lines += render_discrepancy(context.rows)
    return "\n".join(lines)


def render_header(context: ReportContext) -> list[str]:
    results = context.results
    lines = ["# Reproduction report", ""]
    machines = sorted({result.get("machine", "?") for result in results})
    dates = sorted({result.get("date", "?") for result in results})
    lines += [f"{len(results)} runs, {dates[0]} to {dates[-1]}, on: {'; '.join(machines)}."]
    if not any("cuda" in machine.lower() or "gpu" in machine.lower() for machine in machines):
        lines.append("Every run is on CPU: no GPU was at hand, so none of the rows was trained longer on one.")
    if context.pending:
        lines.append(f"**Not run yet** ({len(context.pending)} of the plan's runs): {', '.join(context.pending)}.")
    draws: dict[int, set[int]] = {}
    for result in results:
        for n, few in result.get("few_labels", {}).items():
            if "draws" in few:
                draws.setdefault(int(n), set()).add(len(few["draws"]))
    counts = [
        f"{n}/class: {min(c)}" if len(c) == 1 else f"{n}/class: {min(c)} to {max(c)} (they differ by run)"
        for n, c in sorted(draws.items(), reverse=True)
    ]
    if counts:
        lines.append(
            "A few-label cell is the mean over fixed draws of labelled train images, the same draws for every run ("
            + "; ".join(counts)
            + ")."
        )
    if context.has_findings:
        lines.append(
            f"Where the results depart from the paper, [{FINDINGS}]({FINDINGS}) explains why, "
            "with the runs that test it."
        )
    return [*lines, ""]


def render_claims(context: ReportContext) -> list[str]:
    """The claims, group by group: the primary protocol's verdict per claim, then every protocol's."""
    pooled = pooled_stds(context.rows, context.protocols)
    lines = ["## The paper's claims", ""]
    lines += [
        "Seed noise (std): "
        + "; ".join(f"{protocol_label(p)} {pooled[p][0]:.2f} ({pooled[p][1]})" for p in context.protocols)
        + ".",
        "A claim holds when the difference exceeds its margin: Welch's t-test at 95% where both rows "
        "have several seeds, twice the standard error with the pooled std where one has a single seed "
        "(`squeeze_span.experiments.comparison`). The Welch comparisons judged together at one length "
        "and protocol are a family: each also carries its Holm-adjusted p, and a claim made of them the "
        "verdict at the family's 95%, which no claim of the family passes by luck more than one time in twenty.",
        "",
    ]
    if len(context.protocols) > 1:
        lines += [f"Verdicts below are in the primary protocol, **{protocol_label(context.primary)}**.", ""]
    by_group: dict[tuple[int, str], list[dict]] = {}
    for claim in context.claims:
        by_group.setdefault((claim["steps"], claim["variant"]), []).append(claim)
    multiple = len(by_group) > 1
    for (steps, variant), claims in by_group.items():
        if multiple:
            lines += [f"### {group_title(steps, variant)}", ""]
        lines += render_group(claims, context.primary)
        lines += render_protocol_matrix(claims, context.protocols)
    return lines


def render_group(claims: Sequence[dict], primary: str) -> list[str]:
    """The group's claims in the primary protocol (the full linear probe where that was not measured)."""
    shown = measured_primary(claims, primary)
    lines, unmeasured = [], []
    for claim in claims:
        if claim["protocol"] != shown:
            continue
        if claim["verdict"] == "not measured":
            unmeasured.append(str(claim["number"]))
            continue
        family = f"; at the family's 95% (Holm): {claim['verdict_family']}" if "verdict_family" in claim else ""
        lines.append(f"{claim['number']}. {claim['claim']}: **{claim['verdict']}**{family}")
        lines += [f"   - {describe_comparison(comparison)}" for comparison in claim["comparisons"]]
        if claim.get("missing"):
            lines.append(f"   - also not run: {', '.join(claim['missing'])}")
    if unmeasured:
        lines.append(f"Not measured here (a row of each is missing): claims {', '.join(unmeasured)}.")
    return [*lines, ""]


def describe_comparison(comparison: dict) -> str:
    def side(name: str, mean: float, std: float | None, n: int) -> str:
        spread = f" ± {std:.2f}" if std is not None else ""
        return f"{name} {mean:.2f}{spread} (n={n})"

    p = "" if comparison["p"] is None else f", p={comparison['p']:.3f}"
    if "p_family" in comparison:
        p += f", Holm p={comparison['p_family']:.3f}"
    return (
        f"{side(comparison['a'], comparison['a_mean'], comparison['a_std'], comparison['a_n'])} vs "
        f"{side(comparison['b'], comparison['b_mean'], comparison['b_std'], comparison['b_n'])}: "
        f"{comparison['difference']:+.2f} (margin ±{comparison['margin']:.2f}{p}, {comparison['test']}): "
        f"{comparison['verdict']}"
    )


def render_protocol_matrix(claims: Sequence[dict], protocols: Sequence[str]) -> list[str]:
    """Each measured comparison against each protocol: the difference, its margin and the verdict."""
    measured = [claim for claim in claims if claim.get("comparisons")]
    shown = [protocol for protocol in protocols if any(claim["protocol"] == protocol for claim in measured)]
    if len(shown) < 2:
        return []
    cells: dict[tuple[int, str, str], dict[str, str]] = {}
    for claim in measured:
        for comparison in claim["comparisons"]:
            key = (claim["number"], comparison["a"], comparison["b"])
            cells.setdefault(key, {})[claim["protocol"]] = difference_cell(comparison)
    header = "| claim | a − b | " + " | ".join(protocol_label(protocol) for protocol in shown) + " |"
    lines = [header, "|" + " --- |" * (len(shown) + 2)]
    for (number, a, b), by_protocol in cells.items():
        lines.append(f"| {number} | {a} − {b} | " + " | ".join(by_protocol.get(p, "") for p in shown) + " |")
    return [*lines, "", "(difference, its 95% margin; ✓ holds, ✗ does not hold, ~ within noise)", ""]


VERDICT_MARK = {"holds": "✓", "does not hold": "✗", "within noise": "~"}


def difference_cell(comparison: dict) -> str:
    """'+1.37 ±1.07 ✓': a comparison's difference, its 95% margin and the verdict's mark."""
    return f"{comparison['difference']:+.2f} ±{comparison['margin']:.2f} {VERDICT_MARK[comparison['verdict']]}"


def render_variants(effects: Sequence[dict], protocols: Sequence[str]) -> list[str]:
    """Each variant row minus its default row, in each protocol: what the variant's setting moves."""
    if not effects:
        return []
    shown = [protocol for protocol in protocols if any(effect["protocol"] == protocol for effect in effects)]
    cells: dict[tuple[str, str, int, int, int], dict[str, str]] = {}
    for effect in effects:
        key = (effect["a"], effect["b"], effect["a_n"], effect["b_n"], effect["steps"])
        cells.setdefault(key, {})[effect["protocol"]] = difference_cell(effect)
    lines = [
        "## Each variant against the default",
        "",
        "What a variant's setting moves: its row minus the default row it varies, at the same length.",
        "",
        "| a − b, seeds | steps | " + " | ".join(protocol_label(protocol) for protocol in shown) + " |",
        "|" + " --- |" * (len(shown) + 2),
    ]
    for (a, b, a_n, b_n, steps), by_protocol in cells.items():
        row = " | ".join(by_protocol.get(protocol, "") for protocol in shown)
        lines.append(f"| {a} − {b} (n={a_n} vs {b_n}) | {steps} | {row} |")
    return [*lines, "", "(difference, its 95% margin; ✓ above zero, ✗ below, ~ within noise)", ""]


def render_table(context: ReportContext, table: str, title: str, info: dict[str, RowInfo] | None) -> list[str]:
    table_rows = rows_of(context.results, table, info)
    if not table_rows:
        return []
    shown = [protocol for protocol in context.protocols if any(row.values(protocol) for row in table_rows)]
    columns = " | ".join("top-1 (ours)" if p == LINEAR and len(shown) == 1 else protocol_label(p) for p in shown)
    lines = [
        f"## {title}",
        "",
        f"| row | {columns} | seeds | steps | minutes | CIFAR-10 (paper) |",
        "|" + " --- |" * (len(shown) + 5),
    ]
    for row in table_rows:
        reference = paper.CIFAR10_TOP1.get(row.name)
        cells = " | ".join(row.cell(protocol) for protocol in shown)
        lines.append(
            f"| {row.label} | {cells} | {len(row.results)} | {row.average('steps'):.0f} | "
            f"{row.average('seconds') / 60:.1f} | {'' if reference is None else f'{reference:.2f}'} |"
        )
    figure = {"2": "table2.png", "figure4": "figure4.png", "length": "length.png"}.get(table)
    if figure in context.figures:
        if table == "figure4":
            lines += render_figure4_points(table_rows)
        lines += ["", f"![{title}]({figure})"]
    return [*lines, ""]


def render_figure4_points(table_rows: Sequence[Row]) -> list[str]:
    lines = ["", "| row | teacher FD | top-1 |", "| --- | --- | --- |"]
    for row in table_rows:
        fd = row.results[0].get("fd", {})
        lines.append(f"| {row.label} | {fd.get('value', float('nan')):.2f} ({fd.get('metric', '')}) | {row.cell()} |")
    return lines


def render_discrepancy(rows: dict[str, Row]) -> list[str]:
    discrepancy = [row for row in rows.values() if all("discrepancy" in result for result in row.results)]
    if not discrepancy:
        return []
    measure = discrepancy[0].results[0]["discrepancy"]
    lines = [
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
    return [*lines, ""]
