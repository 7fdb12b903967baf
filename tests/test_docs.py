"""Every Python and shell block of README.md and docs/**/*.md runs as written.

pytest-codeblocks parses the Markdown, with its markers: `<!--pytest.mark.skip(reason="...")-->` before a
block (blocks that need a GPU or a hub model, or take more than a minute), `<!--pytest-codeblocks:cont-->`
(the next block continues the previous one), `<!--pytest-codeblocks:expected-output-->` (the next block is
the previous one's exact stdout) and `<!--pytest-codeblocks:importorskip(module)-->`. Each block is one test
here, so the blocks run in `make test` beside the rest of the suite, under xdist like any other test.

One marker is this project's own: `<!--pytest.mark.save_as("evals/test_x.py", ARGS...)-->` before a Python
block says the block is a file. It is saved at that path, checked with ruff under the project's
configuration (what `make lint` runs) and run with `pytest PATH ARGS...`.

Each block runs in a scratch copy of the project's runnable parts (pyproject.toml, conftest.py, evals/) as its
working directory, so whatever it writes (reports/, results/, runs/, the answer cache) lands in a temporary
folder, and two blocks on two workers never share a report folder. Python blocks run in this process (torch
and the models are already loaded); shell blocks run under `bash -e -o pipefail`, so every command in a block
must succeed, with the virtual environment's `pytest`, `python` and `debug` first on PATH.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pytest_codeblocks import CodeBlock, extract_from_file

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELLS = {"bash": ["/bin/bash", "-e", "-o", "pipefail", "-c"], "sh": ["/bin/sh", "-e", "-c"]}
RUNNABLE = ("python", *SHELLS)
#: What a block at the repository root relies on: the pytest/ruff configuration and the eval suite.
PROJECT_FILES = ("pyproject.toml", "conftest.py")
PROJECT_DIRS = ("evals",)
#: A shell block or a saved file's pytest run that takes longer than this is a bug in the docs (mark it skip).
TIMEOUT_S = 300
SAVE_AS = "save_as"


def _mark_call(text: str) -> tuple[str, tuple[Any, ...], dict[str, Any]] | None:
    """`pytest.mark.NAME(literal args...)` as (NAME, args, kwargs); None when the args are not literals."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"unreadable marker <!--{text}--> in the docs: {exc}") from None
    call = node if isinstance(node, ast.Call) else None
    func = call.func if call else node
    if not (isinstance(func, ast.Attribute) and ast.unparse(func.value) == "pytest.mark"):
        raise ValueError(f"marker <!--{text}--> must be pytest.mark.NAME(...)")
    try:
        args = tuple(ast.literal_eval(a) for a in call.args) if call else ()
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords} if call else {}
    except ValueError:
        return None
    return func.attr, args, kwargs


def _collect() -> list[Any]:
    """One pytest.param per runnable block, with its markers; a `save_as` block carries its path and args."""
    params = []
    for path in DOCS:
        for block in extract_from_file(path):
            if block.syntax not in RUNNABLE:
                continue
            marks, save_as = [], None
            for text in block.marks:
                parsed = _mark_call(text)
                if parsed is None:  # a condition, e.g. skipif(sys.platform == ...): evaluated
                    marks.append(eval(text, {"pytest": pytest, "sys": sys}))  # noqa: S307 (the repo's docs)
                elif parsed[0] == SAVE_AS:
                    save_as = parsed[1]
                else:
                    name, args, kwargs = parsed
                    marks.append(getattr(pytest.mark, name)(*args, **kwargs))
            block_id = f"{path.relative_to(ROOT)}:{block.lineno}"
            params.append(pytest.param(block, save_as, id=block_id, marks=marks))
    return params


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch copy of the project's runnable parts, made the working directory."""
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, tmp_path / name)
    for name in PROJECT_DIRS:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEBUG_CACHE_DIR", str(tmp_path / ".debug_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


def _env() -> dict[str, str]:
    """The environment of a block's processes: the venv first on PATH, no pytest/xdist state of this run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONBREAKPOINT"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # Two cores are shared by every test worker here; a child that takes both slows everything down.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _run(command: list[str], cwd: Path, what: str) -> str:
    try:
        done = subprocess.run(
            command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} ran past {TIMEOUT_S} s; mark its block skip or make it smaller")
    if done.returncode != 0:
        pytest.fail(
            f"{what} exited {done.returncode}\n--- stdout (tail) ---\n{done.stdout[-6000:]}"
            f"\n--- stderr (tail) ---\n{done.stderr[-6000:]}",
            pytrace=False,
        )
    return done.stdout


def _check_output(block: CodeBlock, output: str, where: str) -> None:
    if block.expected_output is None:
        return
    expected, got = block.expected_output, output
    if block.expected_output_ignore_whitespace:
        expected, got = re.sub(r"\s+", "", expected), re.sub(r"\s+", "", got)
    assert got == expected, f"{where}: expected output\n{block.expected_output}\nbut got\n{output}"


@pytest.mark.parametrize(("block", "save_as"), _collect())
def test_block(block: CodeBlock, save_as: tuple[Any, ...] | None, project: Path, request) -> None:
    where = request.node.callspec.id
    if block.importorskip is not None:
        pytest.importorskip(block.importorskip)
    if save_as is not None:
        target, *args = save_as
        path = project / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.code, encoding="utf-8")
        # The copied pyproject.toml carries the ruff settings; `src` points isort at the real package, so
        # `debug` sorts as first-party exactly as `make lint` sorts it in the repository.
        ruff = [sys.executable, "-m", "ruff"]
        first_party = ["--config", f"src = ['{ROOT / 'src'}']"]
        _run([*ruff, "check", *first_party, target], project, f"{where}: ruff check {target}")
        _run([*ruff, "format", "--check", "--diff", target], project, f"{where}: ruff format {target}")
        _run([sys.executable, "-m", "pytest", target, *args], project, f"{where}: pytest {target}")
    elif block.syntax == "python":
        output = io.StringIO()
        code = compile(block.code, where, "exec")
        with contextlib.redirect_stdout(output):
            exec(code, {"__name__": "__main__"})  # noqa: S102 (the repo's own docs)
        _check_output(block, output.getvalue(), where)
    else:
        _check_output(block, _run([*SHELLS[block.syntax], block.code], project, where), where)


def _toml_blocks() -> list[Any]:
    seen: dict[str, str] = {}
    for path in DOCS:
        for block in extract_from_file(path):
            if block.syntax == "toml" and "[tool.debug]" in block.code:
                seen.setdefault(block.code, f"{path.relative_to(ROOT)}:{block.lineno}")
    return [pytest.param(code, id=where) for code, where in seen.items()]


@pytest.mark.parametrize("code", _toml_blocks())
def test_tool_debug_example_gates(code: str, project: Path) -> None:
    """A `[tool.debug]` example parses, and its gates pass a run of two families on the default model."""
    from debug.plugin.gates import parse_gate

    gates = tomllib.loads(code)["tool"]["debug"]["gates"]
    assert gates and all(parse_gate(g, source="pyproject") for g in gates)
    pyproject = project / "pyproject.toml"
    text = re.sub(r"(?ms)^\[tool\.debug\].*?(?=^\[|\Z)", "", pyproject.read_text(encoding="utf-8"))
    pyproject.write_text(f"{text.rstrip()}\n\n{code}", encoding="utf-8")
    # Binding and boolean logic on the default model: a gate without a selector would fail on the second.
    args = ["-k", "variable_binding or boolean_logic", "--num-seqs", "5", "--seq-lens", "4"]
    _run([sys.executable, "-m", "pytest", "evals", *args], project, "pytest evals with the example gates")


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors of a Markdown text (fenced blocks left out)."""
    prose = re.sub(r"(?ms)^```.*?^```", "", text)
    headings = re.findall(r"(?m)^#{1,6}\s+(.+?)\s*$", prose)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("doc", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_relative_links_resolve(doc: Path) -> None:
    """Every relative link of a doc names a file of the repository, and every #anchor a heading of it."""
    text = doc.read_text(encoding="utf-8")
    prose = re.sub(r"(?ms)^```.*?^```", "", text)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if re.match(r"[a-z]+:", target):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked.read_text(encoding="utf-8")):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links: {', '.join(broken)}"
