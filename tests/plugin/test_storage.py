"""Run folders: `latest` is a link swapped atomically (also by concurrent runs); files get the umask mode."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

import plugin.preload  # noqa: F401  (pytester forgets modules an inner run imports: import the heavy ones once)
from debug.plugin.storage import LATEST, RunDir, point_latest
from plugin.fakes import FAKE_CONFTEST, FAKE_EVAL

pytest_plugins = ["pytester"]


def test_latest_is_a_relative_link_to_the_newest_run(tmp_path: Path) -> None:
    first, second = RunDir.create(tmp_path), RunDir.create(tmp_path)
    (first.path / "results.json").write_text("1")
    (second.path / "results.json").write_text("2")
    latest = first.mirror_latest()
    assert latest == tmp_path / LATEST and os.readlink(latest) == first.run_id
    second.mirror_latest()
    assert os.readlink(latest) == second.run_id and (latest / "results.json").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.run_id, second.run_id, LATEST])


def test_a_latest_folder_from_older_versions_is_replaced(tmp_path: Path) -> None:
    old = tmp_path / LATEST
    (old / "images").mkdir(parents=True)
    (old / "results.json").write_text("old copy")
    (old / "RUN_ID").write_text("20260101-000000-aaaaaa\n")
    run = RunDir.create(tmp_path)
    (run.path / "results.json").write_text("new")
    run.mirror_latest()
    assert (tmp_path / LATEST).is_symlink() and (tmp_path / LATEST / "results.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([run.run_id, LATEST])


def _mirror_many(report_dir: str, run_name: str, times: int, start: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    for _ in range(times):
        point_latest(Path(report_dir), run_name)


def test_two_processes_mirroring_at_once(tmp_path: Path) -> None:
    old = tmp_path / LATEST  # the harder start: an old-style folder both want to replace
    old.mkdir()
    (old / "results.json").write_text("old copy")
    names = [RunDir.create(tmp_path).run_id for _ in range(2)]
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no fork of pytest's state
    start = context.Event()
    workers = [context.Process(target=_mirror_many, args=(str(tmp_path), n, 300, start)) for n in names]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]  # no exception in either
    assert os.readlink(tmp_path / LATEST) in names
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*names, LATEST]
    )  # no latest.tmp-*, .latest-*


# -- what a run writes: modes follow the umask -----------------------------------------------------------


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_every_file_a_run_writes_has_the_umask_mode(pytester: pytest.Pytester, umask_022: None) -> None:
    pytester.makeconftest(FAKE_CONFTEST)
    pytester.makepyfile(
        test_counting=FAKE_EVAL
        + """

def test_with_image(measure):
    measure.metric("iia", k=1, n=2)
    measure.image("svg", b"<svg xmlns='http://www.w3.org/2000/svg'></svg>")
"""
    )
    result = pytester.runpytest("--model", "good", "--num-seqs", "3")
    assert result.ret == 0
    run = (pytester.path / "reports" / LATEST).resolve()
    files = [p for p in run.rglob("*") if p.is_file()]
    names = {p.relative_to(run).as_posix() for p in files}
    assert {"results.json", "report.html", "samples.jsonl"} <= names
    assert any(name.startswith("images/") for name in names)
    assert {p.relative_to(run).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {
        name: oct(0o644) for name in names
    }
    folders = [run, *(p for p in run.rglob("*") if p.is_dir())]
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in folders} == {oct(0o755)}
    assert json.loads((run / "results.json").read_text())["run"]["id"] == run.name
