"""debug.plugin.results and debug.plugin.html: the versioned results.json reader and the escaped HTML page."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from debug.plugin.html import accuracy_plots, render_html, summary_rows
from debug.plugin.results import SCHEMA_VERSION, ReportError, build_results, load_results
from debug.stats import wilson_interval

PAYLOAD = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def _case(model: str, family: str, seq_len: int, k: int, n: int = 20, **extra: Any) -> dict[str, Any]:
    low, high = wilson_interval(k, n)
    return {
        "id": f"test_{family}[{model}-TASK-{seq_len}]",
        "nodeid": f"evals/test_{family}.py::test_{family}[{model}-TASK-{seq_len}]",
        "model": model,
        "fingerprint": "f" * 16,
        "family": family,
        "seq_len": seq_len,
        "outcome": "passed",
        "error": None,
        "info": {"task": "TASK"},
        "metrics": {
            "accuracy": {"value": k / n, "k": k, "n": n, "low": low, "high": high, "higher_is_better": True},
            "baseline/copy_line_1": {
                "value": 0.1,
                "k": 2,
                "n": n,
                "low": 0.0,
                "high": 0.3,
                "higher_is_better": True,
            },
        },
        "images": [],
        **extra,
    }


def sample_results(payload: str = PAYLOAD) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Two models x two families x two lengths; one model name and one program carry a script payload."""
    cases = []
    for model in ("model-a", f"evil{payload}"):
        for family in ("variable_binding", "boolean_logic"):
            for seq_len, k in ((4, 15), (8, 9)):
                cases.append(_case(model, family, seq_len, k))
    cases.append(
        {
            **_case("model-a", "exception_handling", 2, 0),
            "outcome": "error",
            "error": f"model failed to load {payload}",
            "metrics": {},
        }
    )
    samples = {
        c["id"]: [
            {
                "program": f"a={i}\n{payload}\n#a:",
                "expected": i,
                "output": f"{i} {payload}",
                "predicted": i,
                "parsed": True,
                "correct": i % 2 == 0,
                "logprob": -0.5,
                "program_hash": f"h{i}",
            }
            for i in range(3)
        ]
        for c in cases
    }
    run = {
        "id": "run-1",
        "started": "2026-11-27T00:00:00+00:00",
        "finished": "2026-11-27T00:01:00+00:00",
        "models": [{"id": "model-a", "fingerprint": "f" * 16, "cases": 5}],
        "git_commit": "abc",
        "args": ["evals", payload],
        "options": {},
        "environment": {"python": "3.11"},
    }
    gates = [
        {
            "gate": "variable_binding:accuracy>=0.9",
            "source": "--gate",
            "model": "model-a",
            "metric": "accuracy",
            "op": ">=",
            "bar": 0.9,
            "value": 0.6,
            "low": 0.45,
            "high": 0.73,
            "k": 24,
            "n": 40,
            "cases": 2,
            "straddles": False,
            "status": "fail",
        }
    ]
    comparisons = {
        "baseline": "old/results.json",
        "cases": [
            {
                "case": cases[0]["id"],
                "model": "model-a",
                "family": "variable_binding",
                "baseline_case": cases[0]["id"],
                "note": None,
                "metrics": {
                    "accuracy": {
                        "n_pairs": 20,
                        "base_k": 18,
                        "new_k": 15,
                        "base_only": 4,
                        "new_only": 1,
                        "delta": -0.15,
                        "p_value": 0.375,
                        "higher_is_better": True,
                    }
                },
            }
        ],
        "families": [],
    }
    results = build_results(
        run,
        cases,
        comparisons=comparisons,
        gates=gates,
        errors=[{"nodeid": "x::y", "when": "???", "message": f"worker crashed {payload}"}],
    )
    return results, samples


def test_load_results_round_trip(tmp_path: Path) -> None:
    results, _ = sample_results()
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert load_results(path)["schema_version"] == SCHEMA_VERSION


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{oops", "is not valid JSON"),
        ('{"cases": []}', "has no schema_version"),
        ('{"schema_version": 2, "cases": []}', "has schema_version 2, but this debug reads version 1 only"),
        ('{"schema_version": 1}', "has no list of cases"),
    ],
)
def test_load_results_refuses_bad_files_in_one_line(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ReportError, match=re.escape(message)) as info:
        load_results(path)
    assert "\n" not in str(info.value)


def test_summary_rows_pool_cases_per_model_and_family() -> None:
    results, _ = sample_results()
    rows = {(r["model"], r["family"]): r for r in summary_rows(results["cases"])}
    row = rows[("model-a", "variable_binding")]
    assert (row["k"], row["n"], row["cases"]) == (24, 40, 2)
    assert (row["low"], row["high"]) == pytest.approx(wilson_interval(24, 40))
    assert row["baselines"]["copy_line_1"] == pytest.approx(0.1)
    assert ("model-a", "exception_handling") not in rows  # the errored case has no accuracy


def test_accuracy_plots_one_png_per_family() -> None:
    results, _ = sample_results()
    plots = accuracy_plots(results["cases"])
    assert [p["family"] for p in plots] == ["boolean_logic", "variable_binding"]
    import base64

    assert all(base64.b64decode(p["png"]).startswith(b"\x89PNG") for p in plots)


def test_html_escapes_every_untrusted_text() -> None:
    results, samples = sample_results()
    html = render_html(results, samples)
    assert "<script>window.__pwned" not in html
    assert 'onerror="window.__pwned' not in html
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html
    # Exactly two script elements, both the page's own: the case data (JSON) and the code.
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts == ['<script type="application/json" id="case-data">', "<script>"]
    assert "\\u003cscript\\u003ewindow.__pwned" in html  # inside the JSON, '<' cannot close the element


def test_html_is_self_contained_and_shows_every_section() -> None:
    results, samples = sample_results()
    html = render_html(results, samples)
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)  # nothing fetched from the network
    for anchor in (
        'id="gates"',
        'id="summary"',
        'id="cases"',
        'id="families"',
        'id="filter"',
        'class="plot"',
        'id="case-data"',
        'id="errors"',
    ):
        assert anchor in html
    assert "variable_binding:accuracy&gt;=0.9" in html and "-15.0 pp" in html and "0.375" in html
    assert len(_case_data(html)) == len(results["cases"])


def _case_data(html: str) -> list[dict[str, Any]]:
    match = re.search(r'<script type="application/json" id="case-data">(.*?)</script>', html, re.S)
    assert match is not None
    return json.loads(match.group(1))


def test_html_caps_the_drill_down() -> None:
    results, samples = sample_results()
    data = _case_data(render_html(results, samples, max_samples_per_case=1, max_samples_total=3))
    assert [len(d["samples"]) for d in data] == [1, 1, 1] + [0] * (len(data) - 3)
    assert all(d["sample_count"] == 3 for d in data)
    assert data[0]["samples"][0]["program"].startswith("a=0\n<script>")  # the JSON round-trips the raw text


def test_html_embeds_case_images() -> None:
    results, samples = sample_results()
    image = {"name": "heatmap", "caption": PAYLOAD, "mime": "image/png", "data": "iVBORw0KGgo="}
    html = render_html(results, samples, {results["cases"][0]["id"]: [image]})
    data = _case_data(html)
    assert data[0]["images"] == [image]
    assert "<script>window" not in html.split('id="case-data">', 1)[1].split("</script>", 1)[0]
