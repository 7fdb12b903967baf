"""Served (`openai:`) models: the client against a scripted stub server, then a real `transformers serve`.

The stub tests pin down the protocol (ids, retries, one-line errors, bounded concurrency, prompt log-probs,
fingerprints). The real-server tests start `transformers serve` once per session on a free local port, serving
the embedded 4-layer binder re-saved with a chat template, and check that served answers equal the in-process
scorer's on the same programs (plain and chat), through the scorer, the Python API and the pytest plugin.
The server is started by the first test of this module and waited for only by the tests that need it (they
come last), so its start-up overlaps the stub tests.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import plugin.preload  # noqa: F401  (pytester forgets modules an inner run imports: import the heavy ones once)
import pytest
from chat_model import save_chat_binder

from debug import models, prompts, serving
from debug.cache import AnswerCache
from debug.config import quick_experiment
from debug.generators import make_variable_binding_program
from debug.programs import generate_programs, text_hash
from debug.runner import ExperimentRunner
from debug.scoring import score_programs
from debug.serving import Client, ServerError, WeightsRequiredError

pytest_plugins = ["pytester"]

NO_THINKING = {"enable_thinking": False}
SERVING_INSTALLED = all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "openai"))
#: Seconds the real server may take to answer /v1/models (measured 10-35 s on two busy cores).
SERVER_START_LIMIT_S = 180


@pytest.fixture(autouse=True)
def _fresh_process_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("DEBUG_CACHE_DIR", raising=False)
    yield
    models.unload_all()


# -- a scripted stub server -------------------------------------------------------------------------------


class Stub:
    """What the stub server answers. `reply(path, body)` -> (status, headers, payload); default: vLLM-like."""

    def __init__(self) -> None:
        self.models: Any = {"object": "list", "data": [{"id": "stub-model", "object": "model", "created": 1}]}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.failures: list[tuple[int, dict[str, str]]] = []  # served first, one per request
        self.delay = 0.0
        self.echo = True
        self.echo_refusal: int | None = None  # answer echo requests with this HTTP status
        self.text = "7\nmore"
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.reply: Callable[[str, dict[str, Any]], tuple[int, dict[str, str], Any]] | None = None

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        with self.lock:
            self.requests.append((path, body))
            if self.failures:
                status, headers = self.failures.pop(0)
                return status, headers, {"error": {"message": f"scripted {status}"}}
        if self.reply is not None:
            return self.reply(path, body)
        if body.get("echo") and self.echo_refusal:
            return self.echo_refusal, {}, {"error": {"message": "echo is not supported"}}
        if path.endswith("/chat/completions"):
            return (
                200,
                {},
                {"choices": [{"index": 0, "message": {"role": "assistant", "content": self.text}}]},
            )
        if body.get("echo") and self.echo:
            # One token per character, each with log-prob -0.5 except the first (None, as vLLM reports).
            text = body["prompt"] + "x"
            lps = [None] + [-0.5] * (len(text) - 1)
            logprobs = {"tokens": list(text), "token_logprobs": lps, "text_offset": list(range(len(text)))}
            return 200, {}, {"choices": [{"index": 0, "text": text, "logprobs": logprobs}]}
        return 200, {}, {"choices": [{"index": 0, "text": self.text, "logprobs": None}]}


def _handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, headers: dict[str, str], payload: Any) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._send(200, {}, stub.models)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with stub.lock:
                stub.in_flight += 1
                stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
            try:
                if stub.delay:
                    time.sleep(stub.delay)
                status, headers, payload = stub.answer(self.path, body)
            finally:
                with stub.lock:
                    stub.in_flight -= 1
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client timed out and left
                self._send(status, headers, payload)

    return Handler


class _QuickServer(ThreadingHTTPServer):
    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (socket.getfqdn), which can take seconds here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


@pytest.fixture
def stub() -> Iterator[tuple[Stub, str]]:
    state = Stub()
    server = _QuickServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _connect(url: str, name: str = "stub-model", **client_kw: Any) -> serving.ServedModel:
    client_kw.setdefault("sleep", lambda s: None)
    return serving.connect(f"openai:{name}@{url}", client=Client(url, **client_kw))


@pytest.fixture(scope="module")
def programs() -> list:
    return generate_programs(make_variable_binding_program, 8, 10, base_seed=11)


# -- ids, connection, errors --------------------------------------------------------------------------------


def test_model_ids_name_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    parse = serving.parse_model_id
    assert parse("openai:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1") == (
        "Qwen/Qwen3-8B",
        "http://127.0.0.1:8000/v1",
    )
    assert parse("openai:me@corp/model@https://host/v1/") == ("me@corp/model", "https://host/v1")
    assert parse("openai:m", {"OPENAI_BASE_URL": "http://h:1/v1"}) == ("m", "http://h:1/v1")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ServerError, match="names no server.*OPENAI_BASE_URL") as info:
        models.load("openai:Qwen/Qwen3-8B")
    assert "\n" not in str(info.value)
    with pytest.raises(ServerError, match="names no served model"):
        parse("openai:@http://h/v1")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_refused_connection_is_one_line() -> None:
    with pytest.raises(ServerError, match="connection refused; start the server") as info:
        models.load(f"openai:m@http://127.0.0.1:{_free_port()}/v1")
    assert "\n" not in str(info.value)


def test_an_unknown_model_name_lists_what_the_server_serves(stub: tuple[Stub, str]) -> None:
    state, url = stub
    with pytest.raises(ServerError, match="serves no model named 'other'; it serves 'stub-model'") as info:
        models.load(f"openai:other@{url}")
    assert "\n" not in str(info.value)
    assert len(state.requests) == 0  # only GET /models was asked


def test_malformed_replies_are_one_line(stub: tuple[Stub, str], programs: list) -> None:
    state, url = stub
    state.models = {"models": ["stub-model"]}
    with pytest.raises(ServerError, match="malformed reply.*OpenAI-compatible"):
        _connect(url)
    state.models = Stub().models
    loaded = _connect(url)
    state.reply = lambda path, body: (200, {}, b"<html>oops</html>")
    with pytest.raises(ServerError, match="malformed reply \\(not JSON\\)") as info:
        score_programs(loaded, programs[:1], prompts.VARIABLE_BINDING)
    assert "\n" not in str(info.value)
    state.reply = lambda path, body: (200, {}, {"choices": []})
    with pytest.raises(ServerError, match="malformed reply \\(no choices\\)"):
        score_programs(loaded, programs[:1], prompts.VARIABLE_BINDING)
    state.reply = lambda path, body: (400, {}, {"detail": "prompt too long"})
    with pytest.raises(ServerError, match="HTTP 400: prompt too long"):
        score_programs(loaded, programs[:1], prompts.VARIABLE_BINDING)
    assert len(state.requests) == 3  # a 400 is not retried


def test_429_5xx_and_timeouts_are_retried_with_backoff(stub: tuple[Stub, str]) -> None:
    state, url = stub
    waits: list[float] = []
    loaded = _connect(url, sleep=waits.append, timeout=0.5)
    state.failures = [(503, {}), (429, {"Retry-After": "3"}), (500, {})]
    request = serving.Request("a=1\n#a:", max_tokens=3)
    assert serving.complete(loaded, request) == "7\n"
    assert waits == [0.5, 3.0, 2.0]  # doubling, or the server's Retry-After when longer
    state.delay = 0.8  # longer than the client's time-out: retried, then given up
    with pytest.raises(ServerError, match="failed after 3 attempts: TimeoutError") as info:
        serving.complete(_connect(url, timeout=0.2, retries=2), request)
    assert "\n" not in str(info.value)


def test_requests_in_flight_are_bounded(stub: tuple[Stub, str], programs: list) -> None:
    state, url = stub
    state.delay = 0.05
    state.echo = False
    loaded = _connect(url)
    samples = score_programs(loaded, programs, prompts.VARIABLE_BINDING, max_concurrency=3)
    assert len(samples) == len(programs)
    assert state.max_in_flight == 3


def test_prompt_logprobs_are_recorded_when_the_server_echoes(stub: tuple[Stub, str], programs: list) -> None:
    state, url = stub
    loaded = _connect(url)
    samples = score_programs(loaded, programs[:3], prompts.VARIABLE_BINDING, max_concurrency=1)
    assert loaded.echo_logprobs is True
    for sample, program in zip(samples, programs):
        # One stub token per character at -0.5 each: the answer's characters after the prompt.
        assert sample.answer_logprob == pytest.approx(-0.5 * len(str(program.answer)))
        assert sample.raw_output == "7\n"  # cut at the newline, as the in-process scorer stops
    greedy = [body for path, body in state.requests if not body.get("echo")]
    assert greedy and all(b["temperature"] == 0 and b["max_tokens"] == 1 + 4 for b in greedy)
    assert all("stop" not in b for b in greedy)


def test_without_prompt_logprobs_the_logprob_is_none_and_probed_once(
    stub: tuple[Stub, str], programs: list
) -> None:
    state, url = stub
    state.echo = False
    loaded = _connect(url)
    samples = score_programs(loaded, programs, prompts.VARIABLE_BINDING, max_concurrency=4)
    assert [s.answer_logprob for s in samples] == [None] * len(programs)
    assert loaded.echo_logprobs is False
    assert sum(1 for _, body in state.requests if body.get("echo")) == 1


def test_a_server_that_refuses_echo_gets_none_not_an_error(stub: tuple[Stub, str], programs: list) -> None:
    state, url = stub
    state.echo_refusal = 400
    loaded = _connect(url)
    samples = score_programs(loaded, programs[:3], prompts.VARIABLE_BINDING, max_concurrency=1)
    assert [s.answer_logprob for s in samples] == [None] * 3 and loaded.echo_logprobs is False
    assert [s.raw_output for s in samples] == ["7\n"] * 3


def test_served_answers_are_cached_under_the_server_fingerprint(
    stub: tuple[Stub, str], programs: list, tmp_path: Path
) -> None:
    state, url = stub
    state.echo = False
    cache = AnswerCache(tmp_path / "cache")
    loaded = _connect(url)
    first = score_programs(loaded, programs, prompts.VARIABLE_BINDING, cache=cache)
    asked = len(state.requests)
    again = score_programs(_connect(url), programs, prompts.VARIABLE_BINDING, cache=cache)
    assert all(s.cached for s in again) and len(state.requests) == asked
    assert [s.raw_output for s in again] == [s.raw_output for s in first]
    assert [s.answer_logprob for s in again] == [None] * len(programs)
    # The fingerprint ignores fields that change between calls and follows what identifies the model.
    state.models["data"][0]["created"] = 99
    assert _connect(url).fingerprint == loaded.fingerprint
    state.models["data"][0]["max_model_len"] = 4096
    changed = _connect(url)
    assert changed.fingerprint != loaded.fingerprint and changed.context_length == 4096
    state.models["data"].append({"id": "twin"})
    assert _connect(url, name="twin").fingerprint != loaded.fingerprint
    assert serving.served_fingerprint(url + "/x", "stub-model", loaded.info) != loaded.fingerprint
    moved = score_programs(changed, programs[:2], prompts.VARIABLE_BINDING, cache=cache)
    assert not any(s.cached for s in moved)


def test_chat_requests_go_to_chat_completions(stub: tuple[Stub, str], programs: list) -> None:
    state, url = stub
    loaded = _connect(url)
    samples = score_programs(
        loaded, programs[:2], prompts.VARIABLE_BINDING, chat_template=True, chat_template_kwargs=NO_THINKING
    )
    paths = {path for path, _ in state.requests}
    assert paths == {"/v1/chat/completions"}
    body = state.requests[0][1]
    assert body["messages"] == [{"role": "user", "content": body["messages"][0]["content"]}]
    assert body["chat_template_kwargs"] == NO_THINKING and body["temperature"] == 0
    # No tokenizer here: the message is recorded, and message plus template arguments are hashed.
    for sample, program in zip(samples, programs):
        assert sample.prompt == program.text and sample.answer_logprob is None
        assert sample.prompt_hash == text_hash(serving_chat_text(program.text))


def serving_chat_text(text: str) -> str:
    from debug.chat import chat_request_text

    return chat_request_text(text, NO_THINKING)


def test_patching_needs_the_weights_in_process(stub: tuple[Stub, str]) -> None:
    _, url = stub
    served = models.load(f"openai:stub-model@{url}")
    with pytest.raises(WeightsRequiredError, match="a patching sweep needs the model's weights") as info:
        models.require_weights(served, "a patching sweep")
    assert "\n" not in str(info.value) and "'stub-model'" in str(info.value)
    with pytest.raises(WeightsRequiredError, match="needs the model's weights"):
        served.model  # noqa: B018 - touching the weights is the point
    with pytest.raises(WeightsRequiredError):
        models.require_weights("openai:x@http://h/v1", "knockout")
    local = models.load("embedded:binder-4l", device="cpu")
    assert models.require_weights(local, "a patching sweep") is local
    assert models.placement(served) == f"server {url}" and models.placement(local) == "cpu"


def test_a_patching_sweep_of_a_served_model_is_refused_in_one_line(stub: tuple[Stub, str]) -> None:
    from debug.causal import sweep  # deferred: the causal engine imports nnsight

    _, url = stub
    with pytest.raises(WeightsRequiredError, match="needs the model's weights in this process") as info:
        sweep(f"openai:stub-model@{url}", ("a=1\n#a:", 1), ("a=2\n#a:", 2))
    assert "\n" not in str(info.value)


def test_the_stop_rule_matches_the_in_process_scorer() -> None:
    rule = serving.apply_stop_rule
    assert rule("5\nb=3", True) == "5\n"
    assert rule("\n5\nx", True) == "\n5\n"  # a leading newline does not end the answer
    assert rule(" 12 \n", True) == " 12 \n"
    assert rule("step 1\nstep 2", False) == "step 1\nstep 2"


# -- a real server ------------------------------------------------------------------------------------------


class RealServer:
    """A `transformers serve` subprocess; `url` once `/v1/models` answers."""

    def __init__(self, folder: Path, log: Path) -> None:
        self.folder, self.log = folder, log
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.started = time.perf_counter()
        self.ready_after: float | None = None
        script = Path(sys.executable).with_name("transformers")
        command = [str(script), "serve", str(folder), "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--device", "cpu", "--dtype", "float32"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
        self._out = open(log, "wb")  # noqa: SIM115 - held open for the process's lifetime
        self.process = subprocess.Popen(command, stdout=self._out, stderr=subprocess.STDOUT, env=env)

    def wait(self) -> str:
        if self.ready_after is not None:
            return self.url
        client = Client(self.url, timeout=2.0, retries=0)
        while time.perf_counter() - self.started < SERVER_START_LIMIT_S:
            if self.process.poll() is not None:
                pytest.fail(f"transformers serve exited with {self.process.returncode}: {self._tail()}")
            try:
                client.get("/models")
            except ServerError:
                time.sleep(0.2)
                continue
            self.ready_after = time.perf_counter() - self.started
            print(f"\ntransformers serve answered /v1/models after {self.ready_after:.1f} s")
            return self.url
        pytest.fail(f"transformers serve did not answer within {SERVER_START_LIMIT_S} s: {self._tail()}")

    def _tail(self) -> str:
        return " | ".join(self.log.read_text(errors="replace").splitlines()[-5:])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._out.close()


@pytest.fixture(scope="session")
def chat_binder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_chat_binder(tmp_path_factory.mktemp("served-binder"))


@pytest.fixture(scope="session")
def real_server(chat_binder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer | None]:
    """A started (not yet necessarily ready) `transformers serve` of `chat_binder`, or None without it."""
    if not SERVING_INSTALLED or not Path(sys.executable).with_name("transformers").exists():
        yield None
        return
    server = RealServer(chat_binder, tmp_path_factory.mktemp("serve") / "serve.log")
    yield server
    server.stop()


@pytest.fixture(autouse=True, scope="module")
def _start_the_server_early(real_server: RealServer | None) -> None:
    """Start the server with the module's first test, so its start-up overlaps the stub tests."""


@pytest.fixture
def served_id(real_server: RealServer | None, chat_binder: Path) -> str:
    if real_server is None:
        pytest.skip(
            "the serving extra is not installed: pip install 'transformers[serving]' (debug[serving])"
        )
    return f"openai:{chat_binder}@{real_server.wait()}"


def test_served_answers_equal_the_in_process_scorer(
    served_id: str, chat_binder: Path, programs: list
) -> None:
    served = models.load(served_id)
    assert served.tokenizer is not None  # the served name is a local folder: exact token budgets
    local = models.load(str(chat_binder), device="cpu")
    mixed = programs + generate_programs(make_variable_binding_program, 12, 6, base_seed=5)
    remote = score_programs(served, mixed, prompts.VARIABLE_BINDING, max_concurrency=4)
    here = score_programs(local, mixed, prompts.VARIABLE_BINDING)
    assert [s.raw_output for s in remote] == [s.raw_output for s in here]
    assert [s.predicted_answer for s in remote] == [s.predicted_answer for s in here]
    assert [s.correct for s in remote] == [s.correct for s in here]
    assert sum(s.correct for s in here) >= len(mixed) // 2  # the binder really answers these
    assert [s.prompt_hash for s in remote] == [s.prompt_hash for s in here]
    assert all(s.answer_logprob is None for s in remote)  # transformers serve ignores echo + logprobs
    assert served.fingerprint != local.fingerprint


def test_served_chat_equals_in_process_chat(served_id: str, chat_binder: Path, programs: list) -> None:
    served = models.load(served_id)
    local = models.load(str(chat_binder), device="cpu")
    kw = {"chat_template": True, "chat_template_kwargs": NO_THINKING}
    remote = score_programs(served, programs, prompts.VARIABLE_BINDING, **kw)
    here = score_programs(local, programs, prompts.VARIABLE_BINDING, **kw)
    assert all(s.prompt.startswith("#no thinking\n") for s in remote)
    assert [s.prompt for s in remote] == [s.prompt for s in here]
    assert [s.raw_output for s in remote] == [s.raw_output for s in here]


def test_python_api_runs_a_served_model(served_id: str, tmp_path: Path) -> None:
    config = quick_experiment(
        "served",
        prompts.VARIABLE_BINDING,
        make_variable_binding_program,
        models=[served_id],
        num_seqs=4,
        seq_lens=[6],
    )
    runner = ExperimentRunner(output_dir=tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    result = runner.run(config)
    assert result["summary"]["num_samples"] == 4
    assert all(r["model_id"] == served_id and r["answer_logprob"] is None for r in result["results"])
    assert json.loads((Path(result["output_dir"]) / "results.json").read_text())[0]["answer_logprob"] is None


EVAL = """
from debug.plugin import Task

TASKS = [Task("VARIABLE_BINDING", generator="make_variable_binding_program", prompt="VARIABLE_BINDING",
              seq_lens=(6,))]


def test_variable_binding(debug_case, debug_model, measure):
    measure.evaluate(debug_case, debug_model)
"""


def test_the_plugin_runs_a_served_model(served_id: str, pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_variable_binding=EVAL)
    result = pytester.runpytest(
        "--model",
        served_id,
        "--num-seqs",
        "4",
        "--max-concurrency",
        "2",
        "--prompt-form",
        "query",
        "-p",
        "no:cacheprovider",
        f"--rootdir={pytester.path}",
    )
    result.assert_outcomes(passed=1)
    latest = pytester.path / "reports" / "latest"
    case = json.loads((latest / "results.json").read_text())["cases"][0]
    assert case["model"] == served_id
    assert case["info"]["device"].startswith("server http://127.0.0.1:")
    assert "unavailable" in case["info"]["answer_logprob"]
    assert "mean_logprob" not in case["metrics"]
    samples = [json.loads(line) for line in (latest / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and all(s["logprob"] is None for s in samples)
