"""The plugin end to end with a fake backend: ids, reports, errors, gates, the measure API."""

from __future__ import annotations

import json

import pytest

import plugin.preload  # noqa: F401  (pytester forgets modules an inner run imports: import the heavy ones once)
from debug.stats import wilson_interval
from plugin.fakes import FAKE_CONFTEST, FAKE_EVAL

pytest_plugins = ["pytester"]


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(FAKE_CONFTEST)
    pytester.makepyfile(test_counting=FAKE_EVAL)
    return pytester


def _results(pytester: pytest.Pytester, report_dir: str = "reports") -> dict:
    return json.loads((pytester.path / report_dir / "latest" / "results.json").read_text())


def _samples(pytester: pytest.Pytester) -> list[dict]:
    text = (pytester.path / "reports" / "latest" / "samples.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_case_ids_are_readable_and_select_with_k(project: pytest.Pytester) -> None:
    result = project.runpytest("--collect-only", "-q", "--model", "good", "--model", "bad")
    result.stdout.fnmatch_lines(["*test_counting[[]good-COUNT-2[]]", "*test_counting[[]bad-COUNT-4[]]"])
    result = project.runpytest("--collect-only", "-q", "--model", "good", "-k", "counting and 4")
    result.stdout.fnmatch_lines(["*test_counting[[]good-COUNT-4[]]", "1/2 tests collected*"])
    result = project.runpytest("--collect-only", "-q", "--model", "good", "--seq-lens", "3,5,7")
    result.stdout.fnmatch_lines(["*good-COUNT-3*", "*good-COUNT-5*", "*good-COUNT-7*", "3 tests collected*"])
    assert not (project.path / "reports").exists()  # collecting writes nothing


def test_run_writes_results_samples_html_and_latest(project: pytest.Pytester) -> None:
    result = project.runpytest("--model", "good", "--model", "bad", "--num-seqs", "30")
    result.assert_outcomes(passed=4)  # a 30% model is a measurement, not a failure
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*debug measurements*", "*test_counting[[]bad-COUNT-2[]]*%*[[]*%, *%[]]*"])
    results = _results(project)
    assert results["schema_version"] == 1
    run = results["run"]
    assert {m["id"] for m in run["models"]} == {"good", "bad"}
    assert all(m["fingerprint"] for m in run["models"])
    assert run["environment"]["packages"]["pytest"] == pytest.__version__
    assert "--num-seqs" in run["args"] and run["options"]["num_seqs"] == 30
    cases = {c["id"]: c for c in results["cases"]}
    assert len(cases) == 4
    good = cases["test_counting[good-COUNT-2]"]
    acc = good["metrics"]["accuracy"]
    assert acc["n"] == 30 and acc["value"] == acc["k"] / 30
    assert (acc["low"], acc["high"]) == pytest.approx(wilson_interval(acc["k"], 30))
    assert good["outcome"] == "passed" and good["model"] == "good" and good["seq_len"] == 2
    assert {"baseline/copy_line_1", "baseline/majority", "mean_logprob", "parse_failure_rate"} <= set(
        good["metrics"]
    )
    bad = cases["test_counting[bad-COUNT-2]"]
    assert bad["metrics"]["accuracy"]["value"] < acc["value"]
    assert bad["metrics"]["parse_failure_rate"]["value"] > 0
    samples = _samples(project)
    assert len(samples) == 4 * 30
    assert all(s["program_hash"] and s["prompt_hash"] and s["case"] in cases for s in samples)
    assert sum(s["correct"] for s in samples if s["case"] == good["id"]) == acc["k"]
    run_dirs = [p for p in (project.path / "reports").iterdir() if p.name != "latest"]
    assert len(run_dirs) == 1 and (run_dirs[0] / "report.html").is_file()
    latest = project.path / "reports" / "latest"
    assert latest.is_symlink() and latest.readlink().name == run_dirs[0].name == run["id"]
    assert (latest / "results.json").read_bytes() == (run_dirs[0] / "results.json").read_bytes()


def test_report_dir_option(project: pytest.Pytester) -> None:
    result = project.runpytest("--model", "good", "--num-seqs", "3", "--report-dir", "out/runs")
    assert result.ret == 0
    assert len(_results(project, "out/runs")["cases"]) == 2


def test_a_model_that_fails_to_load_errors_only_its_cases(project: pytest.Pytester) -> None:
    result = project.runpytest("--model", "good", "--model", "broken-model", "--num-seqs", "5")
    result.assert_outcomes(passed=2, errors=2)
    cases = {c["id"]: c for c in _results(project)["cases"]}
    broken = cases["test_counting[broken-model-COUNT-2]"]
    assert broken["outcome"] == "error"
    assert "is not a model folder" in broken["error"] and "\n" not in broken["error"]
    assert cases["test_counting[good-COUNT-4]"]["outcome"] == "passed"


def test_gate_pass_and_fail_set_the_exit_code(project: pytest.Pytester) -> None:
    ok = project.runpytest("--model", "good", "--num-seqs", "40", "--gate", "counting:accuracy>=0.5")
    assert ok.ret == pytest.ExitCode.OK
    ok.stdout.fnmatch_lines(["*PASS*counting:accuracy>=0.5 on good*"])
    bad = project.runpytest(
        "--model",
        "bad",
        "--num-seqs",
        "40",
        "--gate",
        "counting:accuracy>=0.5",
        "--gate",
        "parse_failure_rate<=0.9",
    )
    assert bad.ret == pytest.ExitCode.TESTS_FAILED
    bad.assert_outcomes(passed=2)
    bad.stdout.fnmatch_lines(["*FAIL*counting:accuracy>=0.5 on bad*", "*PASS*parse_failure_rate<=0.9*"])
    gates = _results(project)["gates"]
    failed = next(g for g in gates if g["gate"] == "counting:accuracy>=0.5")
    assert failed["status"] == "fail" and failed["model"] == "bad" and failed["n"] == 80
    assert failed["low"] <= failed["value"] <= failed["high"]
    assert failed["straddles"] == (failed["low"] < 0.5 < failed["high"])


def test_gate_interval_straddling_is_reported(project: pytest.Pytester) -> None:
    result = project.runpytest(
        "--model", "good", "--num-seqs", "10", "--seq-lens", "2", "--gate", "accuracy>=0.85"
    )
    gate = _results(project)["gates"][0]
    assert gate["straddles"] is True  # 10 samples cannot tell 0.85 from the measured value
    result.stdout.fnmatch_lines(["*straddles the bar*"])


def test_gates_from_pyproject(project: pytest.Pytester) -> None:
    project.makepyprojecttoml(
        '[tool.debug]\ngates = ["COUNT-2:accuracy>=0.99", "nothing_here:accuracy>=0.1"]\n'
    )
    result = project.runpytest("--model", "good", "--num-seqs", "20")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    gates = {g["gate"]: g for g in _results(project)["gates"]}
    assert gates["COUNT-2:accuracy>=0.99"]["status"] == "fail"
    assert gates["COUNT-2:accuracy>=0.99"]["cases"] == 1
    assert gates["nothing_here:accuracy>=0.1"]["status"] == "no data"  # pyproject gates may select nothing


def test_a_cli_gate_that_selects_nothing_fails(project: pytest.Pytester) -> None:
    result = project.runpytest("--model", "good", "--num-seqs", "5", "--gate", "typo_family:accuracy>=0.1")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*FAIL*typo_family:accuracy>=0.1*matched no measured case*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--gate", "accuracy>0.9"],
            "*malformed gate 'accuracy>0.9'*grammar is*[[]SELECTOR:[]]METRIC>=VALUE*",
        ),
        (["--num-seqs", "0"], "*--num-seqs takes a positive integer*"),
        (["--num-seqs", "many"], "*--num-seqs takes a positive integer*"),
        (["--seq-lens", "4,x"], "*--seq-lens takes comma-separated positive integers*"),
        (["--compare-fail", "accuracy:lots", "--baseline", "b.json"], "*--compare-fail takes METRIC:MARGIN*"),
        (["--compare-fail", "speed:2pp", "--baseline", "b.json"], "*METRIC must be one of accuracy*"),
        (["--compare-fail", "accuracy:2pp"], "*--compare-fail needs something to compare with*"),
        (["--program-seed", "-1"], "*--program-seed takes a non-negative integer*"),
        (["--model", " "], "*--model needs a model id*"),
    ],
)
def test_bad_options_stop_with_one_line(project: pytest.Pytester, args: list[str], message: str) -> None:
    result = project.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


def test_malformed_pyproject_gate(project: pytest.Pytester) -> None:
    project.makepyprojecttoml('[tool.debug]\ngates = ["accuracy=>0.9"]\n')
    result = project.runpytest("--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: malformed gate 'accuracy=>0.9' (pyproject)*grammar*"])


def test_measure_api_records_metrics_samples_images(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_causal_demo="""
        import pytest


        def test_custom(measure, tmp_path):
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots(figsize=(1, 1))
            ax.imshow([[0, 1], [1, 0]])
            path = tmp_path / "heat.png"
            fig.savefig(path)
            plt.close(fig)
            measure.info(model="m1", fingerprint="abc", seq_len=5, note="<b>bold</b>")
            measure.metric("iia", k=9, n=10)
            measure.metric("effect/layer0", 0.25)
            measure.metric("nan_metric", float("nan"))
            measure.sample({"program": "<script>x()</script>", "correct": True, "program_hash": "h1"})
            measure.image("heatmap", path, caption="layer x position")
            measure.image("svg", b"<svg xmlns='http://www.w3.org/2000/svg'></svg>")
            with pytest.raises(ValueError, match="only PNG or SVG"):
                measure.image("bad", b"GIF89a")
            with pytest.raises(ValueError, match="both k and n"):
                measure.metric("x", k=1)

        def test_low_value_is_not_a_failure(measure):
            measure.metric("accuracy", k=0, n=50)

        def test_raising_is_a_failure(measure):
            measure.metric("accuracy", k=5, n=10)
            raise RuntimeError("boom in the test body")
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, failed=1)
    results = _results(pytester)
    cases = {c["id"]: c for c in results["cases"]}
    custom = cases["test_custom"]
    assert custom["family"] == "causal_demo" and custom["model"] == "m1" and custom["seq_len"] == 5
    assert custom["metrics"]["iia"]["value"] == 0.9 and custom["metrics"]["iia"]["low"] is not None
    assert custom["metrics"]["effect/layer0"]["value"] == 0.25
    assert custom["metrics"]["nan_metric"]["value"] is None
    assert [i["name"] for i in custom["images"]] == ["heatmap", "svg"]
    assert all((pytester.path / "reports" / "latest" / i["path"]).is_file() for i in custom["images"])
    assert cases["test_raising_is_a_failure"]["outcome"] == "failed"
    assert "boom in the test body" in cases["test_raising_is_a_failure"]["error"]
    html = (pytester.path / "reports" / "latest" / "report.html").read_text()
    data = json.loads(html.split('id="case-data">', 1)[1].split("</script>", 1)[0])
    shown = data[[c["id"] for c in results["cases"]].index("test_custom")]
    assert [i["mime"] for i in shown["images"]] == ["image/png", "image/svg+xml"]
    assert shown["samples"][0]["program"] == "<script>x()</script>"  # kept verbatim, shown as text
    assert "<script>x()</script>" not in html
    assert "<b>bold</b>" not in html


def test_plain_test_suites_write_no_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    assert True\n")
    result = pytester.runpytest()
    assert result.ret == 0
    assert not (pytester.path / "reports").exists()
