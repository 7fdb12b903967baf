"""Gates: parsing, and refusing at start a bar that can never pass or never fail."""

from __future__ import annotations

import pytest

from debug.plugin.compare import PAIRED_METRICS
from debug.plugin.gates import GateError, metric_range, parse_gate

pytest_plugins = ["pytester"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("accuracy>=95", "--gate accuracy>=95: accuracy is a proportion in [0, 1]; did you mean 95%?"),
        ("accuracy>=1.5", "--gate accuracy>=1.5: accuracy is a proportion in [0, 1]; did you mean 1.5%?"),
        (
            "variable_binding:accuracy<=70",
            "--gate variable_binding:accuracy<=70: accuracy is a proportion in [0, 1]; did you mean 70%?",
        ),
        (
            "accuracy>=150%",
            "--gate accuracy>=150%: accuracy is a proportion in [0, 1], so this gate can never pass; "
            "use a bar in [0, 1] or 0%..100%",
        ),
        (
            "parse_failure_rate<=-0.1",
            "--gate parse_failure_rate<=-0.1: parse_failure_rate is a proportion in [0, 1], so this gate can "
            "never pass; use a bar in [0, 1] or 0%..100%",
        ),
        (
            "accuracy>=-0.1",
            "--gate accuracy>=-0.1: accuracy is a proportion in [0, 1], so this gate can never fail; "
            "use a bar in [0, 1] or 0%..100%",
        ),
        (
            "baseline/copy_line_1<=250",
            "--gate baseline/copy_line_1<=250: baseline/copy_line_1 is a proportion in [0, 1], so this gate "
            "can never fail; use a bar in [0, 1] or 0%..100%",
        ),
        (
            "accuracy>=0",
            "--gate accuracy>=0: accuracy is never below 0, so this gate can never fail; "
            "move the bar inside the range",
        ),
        (
            "parse_failure_rate<=100%",
            "--gate parse_failure_rate<=100%: parse_failure_rate is never above 1, so this gate can never "
            "fail; move the bar inside the range",
        ),
        (
            "mean_logprob>=0.5",
            "--gate mean_logprob>=0.5: mean_logprob is a log-probability (never above 0), so this gate can "
            "never pass; use a negative bar, e.g. >=-0.5",
        ),
        (
            "mean_logprob<=0",
            "--gate mean_logprob<=0: mean_logprob is never above 0, so this gate can never fail; "
            "move the bar inside the range",
        ),
        ("effect/layer3>=1e999", "--gate effect/layer3>=1e999: the bar must be a finite number"),
    ],
)
def test_bars_that_decide_nothing_are_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(GateError) as info:
        parse_gate(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "text",
    [
        "accuracy>=0.95",
        "accuracy>=95%",
        "accuracy>=1",  # only a perfect score passes
        "accuracy<=0",  # only a zero passes
        "variable_binding:accuracy>=0.70",
        "parse_failure_rate<=0.05",
        "iia/query/max>=0.8",
        "robust_pairs>=50%",
        "mean_logprob>=-0.5",
        "mean_logprob>=0",
        "normalized/residual/max>=1.5",  # unclipped effects may exceed 1
        "effect/layer3<=-2",
        "embedded:binder:accuracy>=0.9",
    ],
)
def test_bars_that_can_pass_and_fail_are_kept(text: str) -> None:
    gate = parse_gate(text)
    assert gate.text == text


def test_every_paired_metric_is_a_proportion() -> None:
    assert all(metric_range(name) == (0.0, 1.0) for name in PAIRED_METRICS)


def test_pyproject_gate_that_cannot_pass_stops_the_run(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml('[tool.debug]\ngates = ["variable_binding:accuracy>=95"]\n')
    result = pytester.runpytest("--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: [[]tool.debug[]] gate variable_binding:accuracy>=95: accuracy is a proportion in "
            "[[]0, 1[]]; did you mean 95%?"
        ]
    )


def test_cli_gate_that_cannot_fail_stops_the_run(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--collect-only", "--gate", "parse_failure_rate<=1.0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --gate parse_failure_rate<=1.0: parse_failure_rate is never above 1*"]
    )
