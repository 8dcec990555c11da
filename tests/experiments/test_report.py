import json

import pytest

from squeeze_span.cli import main
from squeeze_span.errors import ConfigError
from squeeze_span.experiments.comparison import (
    compare_samples,
    family_verdict,
    holm_adjusted,
    pooled_std,
    welch_degrees_of_freedom,
)
from squeeze_span.experiments.report import build_report


def write_result(results, name, seed, top1, tables, **extra):
    path = results / name / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"name": name, "seed": seed, "top1": top1, "tables": tables, "steps": 500, "seconds": 300.0}
    record.update(machine="test machine", date="2026-12-03", method=name, data="mix", **extra)
    path.write_text(json.dumps(record))


def test_welch_holds_beyond_its_95_percent_margin_and_is_within_noise_inside_it():
    # stds 0.5 each, n 3: SE = sqrt(0.25/3 + 0.25/3) = 0.408, df 4, t(0.975, 4) = 2.776: margin 1.133;
    # t = 2 / 0.408 = 4.899 gives p = 0.00805 (two-sided).
    verdict = compare_samples([87, 87.5, 88], [85, 85.5, 86], fallback_std=9.0)
    assert verdict["test"] == "Welch's t, 95%"
    assert verdict["difference"] == pytest.approx(2.0)
    assert verdict["margin"] == pytest.approx(1.1335, abs=1e-4)
    assert verdict["p"] == pytest.approx(0.00805, abs=1e-5)
    assert verdict["verdict"] == "holds"
    assert compare_samples([85, 85.5, 86], [87, 87.5, 88], 9.0)["verdict"] == "does not hold"
    # Twice the std: SE 0.816, margin 2.267 > 2: the same gap is noise now (2 SE would have called it).
    assert compare_samples([86, 87, 88], [84, 85, 86], 9.0)["verdict"] == "within noise"


def test_welch_degrees_of_freedom_fall_towards_the_noisier_side():
    # Equal variances and sizes: n_a + n_b - 2. One side exact: that side's n - 1 alone.
    assert welch_degrees_of_freedom(1.0, 3, 1.0, 3) == pytest.approx(4.0)
    assert welch_degrees_of_freedom(1.0, 3, 0.0, 5) == pytest.approx(2.0)
    # (1/3 + 4/5)^2 / ((1/3)^2/2 + (4/5)^2/4) = 1.2844 / 0.2156 = 5.958
    assert welch_degrees_of_freedom(1.0, 3, 4.0, 5) == pytest.approx(5.958, abs=1e-3)


def test_a_one_seed_side_takes_the_pooled_std_and_twice_the_standard_error():
    # margin 2 * sqrt(1/3 + 0.5^2 / 1) = 1.53 against a difference of 1.5
    verdict = compare_samples([86, 87, 88], [85.5], fallback_std=0.5)
    assert verdict["test"] == "2 SE, pooled seed std" and verdict["p"] is None
    assert verdict["margin"] == pytest.approx(1.5275, abs=1e-4) and verdict["verdict"] == "within noise"


def test_holm_multiplies_the_ith_smallest_p_by_m_minus_i_plus_one_and_keeps_the_order():
    # sorted 0.005, 0.01, 0.03, 0.04: times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06 for the last
    assert holm_adjusted([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjusted([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm_adjusted([0.02]) == pytest.approx([0.02])  # a family of one is its own test
    assert family_verdict(+0.5, 0.049) == "holds" and family_verdict(-0.5, 0.049) == "does not hold"
    assert family_verdict(+0.5, 0.05) == "within noise"


def test_the_pooled_std_averages_the_variances_of_rows_with_seeds():
    assert pooled_std([[1, 3], [0, 0, 0], [5]]) == pytest.approx(1.0)  # variances 2 and 0
    assert pooled_std([[5]]) is None


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
    # one seed each: the pooled std (0.32) gives a margin of 0.89 against a difference of 1.00
    assert "1. squeeze > VICReg-syn and SimSiam-syn (same generated images): **holds**" in report
    assert "   - also not run: simsiam_syn" in report
    assert "Not measured here (a row of each is missing): claims 2, 4." in report
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


def test_the_length_study_is_judged_per_length_variant_and_protocol(tmp_path):
    import yaml

    results = tmp_path / "results"
    entries = []

    def add(name, row, steps, top1s, few10s, variant=""):
        entries.append({"name": name, "kind": "pixels", "row": row, "variant": variant, "tables": {"length": name}})
        for seed, (top1, few10) in enumerate(zip(top1s, few10s)):
            draws = [few10] * (5 if steps == 500 else 25)
            protocols = {"few_labels": {"10": {"top1": few10, "draws": draws}}, "knn": {"20": {"top1": top1 - 1}}}
            write_result(results, name, seed, top1, {}, **protocols)
            path = results / name / f"seed{seed}.json"
            path.write_text(path.read_text().replace('"steps": 500', f'"steps": {steps}'))

    add("squeeze_500", "squeeze", 500, [86.0, 86.1, 85.9], [70.0, 70.5, 69.5])
    add("vicreg_syn_500", "vicreg_syn", 500, [86.0, 86.2, 85.8], [66.0, 66.5, 65.5])
    add("squeeze_2000", "squeeze", 2000, [88.0, 88.1, 87.9], [74.0, 74.5, 73.5])
    add("vicreg_syn_2000", "vicreg_syn", 2000, [87.0, 87.1, 86.9], [76.0, 76.5, 75.5])
    add("fp32_squeeze_500", "squeeze", 500, [85.0, 85.1, 84.9], [60.0, 60.5, 59.5], variant="fp32")
    add("squeeze_span_2000", "squeeze_span", 2000, [87.0, 87.1, 86.9], [75.3, 75.8, 74.8])
    add("vicreg_real_2000", "vicreg_real", 2000, [87.0, 87.1, 86.9], [74.0, 74.5, 73.5])
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"entries": entries, "primary_protocol": "linear_10"}))
    summary = build_report(results, tmp_path / "out", plan)
    report = (tmp_path / "out" / "REPORT.md").read_text()

    assert "Verdicts below are in the primary protocol, **linear, 10/class**." in report
    assert "the same draws for every run (10/class: 5 to 25 (they differ by run))." in report
    first, second = report.index("### 500 steps"), report.index("### 2000 steps")
    assert first < second and "### 500 steps, fp32" not in report  # no fp32 baseline: nothing to judge there
    five_hundred = report[first:second]
    # 10 labels a class: 70.0 vs 66.0 (stds 0.5) holds; the full linear probe: 86.0 vs 86.0, within noise
    assert "1. squeeze > VICReg-syn and SimSiam-syn (same generated images): **holds**" in five_hundred
    # claim 1 alone is measured at 500 steps: a family of one, no correction to report
    assert "Holm" not in five_hundred.split("| claim |")[0]
    assert "squeeze 70.00 ± 0.50 (n=3) vs vicreg_syn 66.00 ± 0.50 (n=3): +4.00" in five_hundred
    assert "| 1 | squeeze − vicreg_syn | +0.00 ±0.42 ~ | +4.00 ±1.13 ✓ | +0.00 ±0.42 ~ |" in five_hundred
    assert "1. squeeze > VICReg-syn and SimSiam-syn (same generated images): **does not hold**" in report[second:]
    # At 2000 steps claims 1 and 3 are a family of two in each protocol. Claim 3: +1.30, SE 0.408, df 4:
    # t 3.18, p 0.0334 alone (holds); claim 1's p (-2.0 / 0.408: 0.008) is the smaller, so Holm takes
    # claim 3's p once: 0.0334 stays, the family's verdict too. Claim 1: 2 x 0.008 = 0.016, still fails.
    assert "3. squeeze and span > VICReg-real: **holds**; at the family's 95% (Holm): holds" in report[second:]
    assert "p=0.033, Holm p=0.033" in report[second:] and "p=0.008, Holm p=0.016" in report[second:]
    assert "**does not hold**; at the family's 95% (Holm): does not hold" in report[second:]
    # the fp32 row has no fp32 baseline: nothing of claim 1 is measured in its group
    assert "fp32" not in "".join(claim["variant"] for claim in summary["claims"] if claim.get("comparisons"))
    assert summary["primary"] == "linear_10"
    assert "| linear, all labels | linear, 10/class | kNN, k=20 |" in report.replace("| row ", "|")[:100000]
    assert (tmp_path / "out" / "length.png").stat().st_size > 1000
    assert "![The main rows by training length, in every probe protocol](length.png)" in report
    records = json.loads((tmp_path / "out" / "results.json").read_text())
    assert records["runs"][0]["protocols"] == {"linear": 86.0, "linear_10": 70.0, "knn_20": 85.0}
    # what fp32 moves: its squeeze row against the default's at 500 steps, -1.00 (SE 0.082, df 4) and -10.00
    assert (
        "| fp32_squeeze_500 − squeeze_500 (n=3 vs 3) | 500 | -1.00 ±0.23 ✗ | -10.00 ±1.13 ✗ | -1.00 ±0.23 ✗ |"
        in report.split("## Each variant against the default")[1]
    )
    assert [(effect["a"], effect["b"], effect["protocol"]) for effect in records["variants"]] == [
        ("fp32_squeeze_500", "squeeze_500", protocol) for protocol in ("linear", "linear_10", "knn_20")
    ]


def test_the_seed_noise_is_pooled_over_trained_rows_when_there_are_some():
    from squeeze_span.experiments.report import Row, pooled_stds

    def row(name, steps, top1s):
        return Row(name, name, [{"top1": top1, "steps": steps} for top1 in top1s])

    untrained = row("random_init", 0, [70.0, 74.0])  # std 2.83: its seed draws its random features
    trained = {"a": row("a", 500, [80.0, 81.0]), "b": row("b", 500, [85.0, 86.0])}  # std 0.71 each
    std, how = pooled_stds({"random_init": untrained, **trained}, ["linear"])["linear"]
    assert std == pytest.approx(0.5**0.5) and how == "pooled over the 2 trained rows with several seeds"
    std, how = pooled_stds({"random_init": untrained}, ["linear"])["linear"]
    assert std == pytest.approx(8**0.5) and how == "pooled over the 1 rows with several seeds"


def test_the_length_figure_sets_a_variants_points_beside_the_default_lines():
    from squeeze_span.experiments.report import length_curves

    def claim(number, steps, variant, difference, protocol="linear_10"):
        comparison = {"a": "squeeze", "b": "vicreg_syn", "difference": difference, "standard_error": 0.2}
        return {"number": number, "steps": steps, "variant": variant, "protocol": protocol, "comparisons": [comparison]}

    claims = [
        claim(1, 2000, "", 0.8),
        claim(1, 500, "fp32", 0.8),
        claim(1, 500, "", 1.3),
        claim(1, 0, "", 9.0),  # untrained rows have no length
        claim(3, 500, "", 0.9),  # one length only: no curve to draw
        claim(3, 500, "fp32", 0.1),
        claim(3, 2000, "fp32", 0.0),  # two lengths, but only in the variant: not drawn either
    ]
    curves = length_curves(claims, ["linear_10"])
    assert list(curves) == ["claim 1: squeeze − vicreg_syn"]
    lines = curves["claim 1: squeeze − vicreg_syn"]
    assert list(lines) == [("linear, 10/class", ""), ("linear, 10/class", "fp32")]  # the default first
    assert sorted(lines["linear, 10/class", ""]) == [(500, 1.3, 0.2), (2000, 0.8, 0.2)]
    assert lines["linear, 10/class", "fp32"] == [(500, 0.8, 0.2)]
    assert length_curves(claims, ["knn_20"]) == {}  # a protocol the report does not show
