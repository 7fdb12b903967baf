"""Every numeric option of the plugin is bounded and refused in one line before any work."""

from __future__ import annotations

from typing import Any

import pytest

from debug.plugin.options import NUMERIC_OPTIONS, _seq_lens, addoption, bounded_int, resolve_options

pytest_plugins = ["pytester"]

HUGE = str(10**30)
#: Metavars of options that take numbers (a new numeric option must use one, and be listed here or in
#: NUMERIC_OPTIONS).
NUMERIC_METAVARS = {"N", "SEED", "L1,L2,...", "A", "METRIC:MARGIN"}
#: The numeric options that are not integers: option -> (its arguments for a value, the refusal's start).
OTHER_NUMERIC = {
    "--compare-alpha": (lambda v: [f"--compare-alpha={v}"], "--compare-alpha takes a number in [1e-06, 0.5]"),
    "--compare-fail": (
        lambda v: [f"--compare-fail=accuracy:{v}", "--baseline=b.json"],
        "--compare-fail takes METRIC:MARGIN",
    ),
}


class _Recorder:
    """Stands in for pytest's parser and its option group, recording what `addoption` registers."""

    def __init__(self) -> None:
        self.options: dict[str, dict[str, Any]] = {}

    def getgroup(self, *args: Any, **kwargs: Any) -> _Recorder:
        return self

    def addoption(self, *names: str, **kwargs: Any) -> None:
        self.options[names[0]] = kwargs

    def addini(self, *args: Any, **kwargs: Any) -> None:
        pass


def _registered() -> dict[str, dict[str, Any]]:
    recorder = _Recorder()
    addoption(recorder)  # type: ignore[arg-type]
    return recorder.options


def test_every_numeric_option_has_bounds() -> None:
    numeric = {name for name, kw in _registered().items() if kw.get("metavar") in NUMERIC_METAVARS}
    assert numeric == set(NUMERIC_OPTIONS) | set(OTHER_NUMERIC)
    for low, high, example in NUMERIC_OPTIONS.values():
        assert 0 <= low < high and all(low <= int(x) <= high for x in example.split(","))


@pytest.mark.parametrize("option", sorted(NUMERIC_OPTIONS))
@pytest.mark.parametrize("value", ["0", "-1", HUGE])
def test_out_of_range_values_are_refused_before_any_work(
    pytester: pytest.Pytester, option: str, value: str
) -> None:
    low, high, _ = NUMERIC_OPTIONS[option]
    # `--opt=value`: "-1" as a separate word would read as an option to argparse.
    config = pytester.parseconfig(f"{option}={value}")
    if low <= int(value) <= high:
        resolve_options(config)  # in range (0 for --program-seed): accepted
        return
    with pytest.raises(pytest.UsageError) as info:
        resolve_options(config)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{option} takes ")
    assert f"in [{low}, {high}]" in message and repr(value) in message


@pytest.mark.parametrize("option", sorted(OTHER_NUMERIC))
@pytest.mark.parametrize("value", ["0", "-1", HUGE])
def test_out_of_range_fractions_are_refused_before_any_work(
    pytester: pytest.Pytester, option: str, value: str
) -> None:
    args, refusal = OTHER_NUMERIC[option]
    config = pytester.parseconfig(*args(value))
    if option == "--compare-fail" and value == "0":
        assert resolve_options(config).compare_fail.margin == 0.0  # a zero margin is a valid (strict) bar
        return
    with pytest.raises(pytest.UsageError) as info:
        resolve_options(config)
    assert "\n" not in str(info.value) and str(info.value).startswith(refusal)


@pytest.mark.parametrize("option", sorted(NUMERIC_OPTIONS))
def test_the_bounds_themselves_are_accepted(option: str) -> None:
    low, high, _ = NUMERIC_OPTIONS[option]
    assert bounded_int(str(low), option) == low and bounded_int(f" {high} ", option) == high
    for bad in (str(low - 1), str(high + 1), "1.5", "1e3", "+3", "x", "", "9" * 400):
        with pytest.raises(pytest.UsageError, match=rf"^{option} takes .* in \[{low}, {high}\]"):
            bounded_int(bad, option)


def test_seq_lens_bounds_every_length() -> None:
    low, high, _ = NUMERIC_OPTIONS["--seq-lens"]
    for text in (f"4,{high + 1}", "4,0", "4,-1", " , "):
        with pytest.raises(
            pytest.UsageError, match=r"^--seq-lens takes comma-separated positive integers in "
        ):
            _seq_lens(text)
    assert _seq_lens(f"{low},8,8,{high}") == (low, 8, high)


def test_a_huge_value_stops_the_run_in_one_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nothing="def test_x():\n    pass\n")
    result = pytester.runpytest("--num-seqs", HUGE)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: --num-seqs takes a positive integer in [[]1, 1000000[]]*got '{HUGE}'"]
    )
    assert "1 passed" not in result.stdout.str() and not (pytester.path / "reports").exists()


def test_remote_choices_are_the_engines() -> None:
    # The plugin writes them out (loading it must not import torch); the engine's mapping is the truth.
    from debug.causal.engine import REMOTE_CHOICES  # here: the engine imports torch and nnsight

    registered = _registered()["--remote"]
    assert registered["choices"] == list(REMOTE_CHOICES)
    assert registered["default"] in REMOTE_CHOICES and REMOTE_CHOICES[registered["default"]] is False
