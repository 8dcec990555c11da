import json
import math

import pytest

from squeeze_span.cli import main
from squeeze_span.errors import ConfigError
from squeeze_span.experiments.report import Row, build_report, compare, pooled_seed_std


def write_result(results, name, seed, top1, tables, **extra):
    path = results / name / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"name": name, "seed": seed, "top1": top1, "tables": tables, "steps": 500, "seconds": 300.0}
    record.update(machine="test machine", date="2026-12-03", method=name, data="mix", **extra)
    path.write_text(json.dumps(record))


def row(name, top1s):
    return Row(name, name, [{"top1": value} for value in top1s])


def test_a_claim_holds_beyond_twice_the_standard_error_and_is_within_noise_inside_it():
    a, b = row("a", [86, 87, 88]), row("b", [84, 85, 86])  # means 87 and 85, stds 1
    margin = 2 * math.sqrt(1 / 3 + 1 / 3)  # 1.633
    assert compare(a, b, pooled_std=9.0) == pytest.approx(
        {"a": "a", "b": "b", "a_top1": 87, "b_top1": 85, "difference": 2, "margin": margin, "verdict": "holds"}
    )
    assert compare(b, a, 9.0)["verdict"] == "does not hold"
    assert compare(row("c", [86, 87, 88]), row("d", [85, 86, 87]), 9.0)["verdict"] == "within noise"
    # A one-seed row takes the pooled std: margin 2 * sqrt(1/3 + 0.5^2 / 1) = 1.53, difference 1.5.
    assert compare(a, row("e", [85.5]), pooled_std=0.5)["verdict"] == "within noise"


def test_the_pooled_std_averages_the_variances_of_rows_with_seeds():
    rows = {"a": row("a", [1, 3]), "b": row("b", [0, 0, 0]), "c": row("c", [5])}  # variances 2 and 0
    std, how = pooled_seed_std(rows)
    assert std == pytest.approx(1.0) and "2 rows" in how
    assert pooled_seed_std({"c": row("c", [5])})[0] == 0.5


def test_the_report_writes_tables_claims_figures_and_every_run(tmp_path):
    results = tmp_path / "results"
    for seed, (ours, vicreg) in enumerate([(88.0, 86.0), (88.4, 86.2), (87.6, 85.8)]):
        write_result(
            results, "squeeze_span", seed, ours, {"1": "G features, squeeze and span", "2": "squeeze and span"}
        )
        write_result(results, "vicreg_real", seed, vicreg, {"2": "VICReg, real"})
    write_result(results, "random_init", 0, 78.0, {"2": "random init"})
    write_result(results, "kd_squeeze_novar_nocov", 0, 60.0, {"3": "c"})
    for kimg, fd, top1 in [(50, 11.0, 86.0), (500, 2.8, 87.9)]:
        write_result(results, f"kimg{kimg}", 0, top1, {"figure4": f"{kimg} kimg"}, fd={"metric": "FD-x", "value": fd})
    write_result(
        results,
        "squeeze",
        0,
        86.0,
        {"2": "squeeze"},
        discrepancy={"measure": "FD", "value": 1.5, "relative": 0.25, "images": 10},
    )
    write_result(  # made before the relative measure existed
        results, "vicreg_syn", 0, 85.0, {"2": "VICReg, syn"}, discrepancy={"measure": "FD", "value": 1.0, "images": 10}
    )

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "FINDINGS.md").write_text("# why\n")
    assert main(["report", str(results), "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert "[FINDINGS.md](FINDINGS.md) explains why" in report
    assert "3. squeeze and span > VICReg-real: **holds**" in report
    assert "Every run is on CPU" in report
    assert "| squeeze and span | 88.00 ± 0.40 | 3 | 500 | 5.0 | 92.54 |" in report
    assert "7. row c (T_phi without L_var and L_cov) collapses" in report and "**holds**" in report
    assert "1. squeeze > VICReg-syn and SimSiam-syn (same generated images): **not measured**" in report
    assert "| squeeze | 1.500 | 0.2500 | 86.00 |" in report
    assert "| vicreg_syn | 1.000 |  | 85.00 |" in report
    runs = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    assert len(runs) == 3 * 3 + 1 + 1 + 2 + 1 + 1  # squeeze_span sits in two tables
    figure4 = {"table": "figure4", "row": "500 kimg", "fd": 2.8, "top1": 87.9}
    assert any(figure4.items() <= run.items() for run in runs)
    assert (tmp_path / "out" / "figure4.png").stat().st_size > 1000
    assert (tmp_path / "out" / "table2.png").stat().st_size > 1000


def test_a_folder_without_results_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="holds no results"):
        build_report(tmp_path, tmp_path / "out")
    with pytest.raises(ConfigError, match="is not a folder of sweep results"):
        build_report(tmp_path / "missing", tmp_path / "out")


def test_with_the_plan_rows_follow_its_order_and_missing_runs_are_listed(tmp_path):
    import yaml

    results = tmp_path / "results"
    write_result(results, "a_first_alphabetically", 0, 80.0, {"2": "second in the plan"})
    write_result(results, "z_last_alphabetically", 0, 81.0, {"2": "the label when it ran"})
    plan = tmp_path / "plan.yaml"
    entries = [
        {"name": "z_last_alphabetically", "kind": "pixels", "tables": {"2": "first in the plan"}},
        {"name": "a_first_alphabetically", "kind": "pixels", "tables": {"2": "second in the plan", "longer": "added"}},
        {"name": "never_run", "kind": "pixels", "seeds": [0, 1]},
    ]
    plan.write_text(yaml.safe_dump({"entries": entries}))
    summary = build_report(results, tmp_path / "out", plan)
    assert summary["pending"] == ["never_run seed 0", "never_run seed 1"]
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert report.index("first in the plan") < report.index("second in the plan")
    assert "the label when it ran" not in report  # the plan's labels and tables win
    assert "## Follow-up: the main rows trained longer" in report and "| added | 80.00 |" in report
    assert "**Not run yet** (2 of the plan's runs): never_run seed 0, never_run seed 1." in report
