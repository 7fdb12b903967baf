"""A client for OpenAI-compatible serving engines (vLLM, SGLang, `transformers serve`): `openai:` model ids.

A model id `openai:<served-name>@<base-url>` (for example `openai:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1`)
names a model behind a server's `/v1` API; without `@<base-url>` the base URL comes from `$OPENAI_BASE_URL`,
and `$OPENAI_API_KEY`, when set, is sent as a bearer token. `connect` asks `GET /models` once and refuses a
name the server does not list. Such a model is behavioural only: answers come from the server, weights never
reach this process (`ServedModel.model` raises `WeightsRequiredError`).

Requests are greedy (`temperature` 0) with the scorer's token budget, at most `max_concurrency` in flight at
a time (a thread pool). The newline stop rule of direct-answer prompts is applied here, to the returned text,
rather than sent as `stop`: a server's `stop` would also end a reply that begins with a newline, which the
in-process scorer lets through, and the budget (the answer's length plus a few tokens) keeps the extra tokens
cheap. HTTP 429, 5xx replies, time-outs and dropped connections are retried with exponential backoff
(`RETRIES` retries, `BACKOFF_S` doubling, at most `MAX_BACKOFF_S`, or the server's `Retry-After` when it is
longer; 408 counts as a time-out); a refused connection, any other HTTP error or a malformed reply stops at
once with a one-line `ServerError`.

The expected answer's log-probability needs prompt log-probs, which vLLM returns for `echo` + `logprobs`
on `/v1/completions`. The first scored program probes for them; a server that ignores them (`transformers
serve`, any `/v1/chat/completions` request) or refuses them with a 4xx gets `None` -- unavailable, not 0 --
and is not asked again.

The HTTP layer is the standard library's `urllib`: importing `debug` stays light, and one connection per
request costs little next to decoding.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

OPENAI_PREFIX = "openai:"
#: Requests in flight per served model when no `max_concurrency` is given (`--max-concurrency`).
DEFAULT_MAX_CONCURRENCY = 8
#: Retries of a request that met HTTP 429, a 5xx reply, a time-out or a dropped connection.
RETRIES = 5
#: The first retry waits this long; each later one twice as long, up to `MAX_BACKOFF_S`.
BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
#: Seconds one request may take (connect plus reply) before it counts as timed out and is retried.
REQUEST_TIMEOUT_S = 120.0
#: Fields of a `/v1/models` entry that identify the model. Others change between calls (vLLM's `created` is
#: the time of the request, `permission` carries fresh ids; `transformers serve` reports a load `status`).
STABLE_MODEL_FIELDS = ("id", "object", "owned_by", "root", "parent", "max_model_len")


class ServerError(RuntimeError):
    """A served model could not be reached or answered in a way that cannot be used (one-line message).

    Attributes:
        status: The HTTP status of the reply that caused it, when there was one.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class WeightsRequiredError(RuntimeError):
    """A step that needs the model's weights in this process was asked of a served (`openai:`) model."""


def is_served_id(model_id: Any) -> bool:
    """Whether `model_id` names a model behind an OpenAI-compatible server (`openai:...`)."""
    return isinstance(model_id, str) and model_id.startswith(OPENAI_PREFIX)


def parse_model_id(model_id: str, environ: dict[str, str] | None = None) -> tuple[str, str]:
    """(served name, base URL) of an `openai:<served-name>[@<base-url>]` id.

    The base URL is split off at the last `@` followed by `http://` or `https://`, so a served name may
    itself contain `@`. Without one, `$OPENAI_BASE_URL` is the base URL. A trailing `/` is dropped.

    Raises:
        ServerError: Not an `openai:` id, no served name, or no base URL anywhere (one line naming the fix).
    """
    env = os.environ if environ is None else environ
    if not is_served_id(model_id):
        raise ServerError(f"model id {model_id!r} is not of the form openai:NAME@http://HOST:PORT/v1")
    rest = model_id[len(OPENAI_PREFIX) :].strip()
    cut = max(rest.rfind("@http://"), rest.rfind("@https://"))
    name, url = (rest[:cut], rest[cut + 1 :]) if cut >= 0 else (rest, None)
    name = name.strip()
    if not name:
        raise ServerError(
            f"model id {model_id!r} names no served model; write openai:NAME@http://HOST:PORT/v1"
        )
    if url is None:
        url = (env.get("OPENAI_BASE_URL") or "").strip()
        if not url:
            raise ServerError(
                f"model id {model_id!r} names no server: write openai:{name}@http://HOST:PORT/v1 "
                "or set OPENAI_BASE_URL"
            )
        if not re.match(r"https?://", url):
            raise ServerError(f"OPENAI_BASE_URL must start with http:// or https://; got {url!r}")
    return name, url.rstrip("/")


def _one_line(text: str, limit: int = 240) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _error_detail(raw: bytes) -> str:
    """The message inside an error reply: OpenAI/vLLM `{"error": {"message"}}`, FastAPI `{"detail"}`."""
    text = raw.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return _one_line(text)
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return _one_line(error["message"])
        for key in ("detail", "message", "error"):
            if data.get(key):
                return _one_line(data[key] if isinstance(data[key], str) else json.dumps(data[key]))
    return _one_line(text)


class _Transient(Exception):
    """A failure worth retrying (429, 5xx, time-out, dropped connection)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None  # an HTTP date: fall back to the backoff schedule


@dataclass
class Client:
    """JSON over HTTP to one server's OpenAI-compatible API, with retries (see the module docstring).

    Args:
        base_url: The API root, e.g. `http://127.0.0.1:8000/v1`.
        api_key: Sent as `Authorization: Bearer ...` when set (default `$OPENAI_API_KEY`).
        timeout: Seconds per request.
        retries: Retries after the first attempt.
        backoff: Seconds before the first retry (doubling after each).
        sleep: How to wait between attempts (tests pass a recorder).
    """

    base_url: str
    api_key: str | None = field(default_factory=lambda: os.environ.get("OPENAI_API_KEY") or None)
    timeout: float = REQUEST_TIMEOUT_S
    retries: int = RETRIES
    backoff: float = BACKOFF_S
    sleep: Callable[[float], None] = time.sleep

    def get(self, path: str) -> Any:
        """`GET base_url + path`, parsed JSON."""
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """`POST base_url + path` with a JSON body, parsed JSON."""
        return self.request("POST", path, body)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request, retried on transient failures.

        Raises:
            ServerError: Refused connection, a non-retryable HTTP error, a malformed (non-JSON) reply, or
                transient failures past the last retry.
        """
        where = f"{method} {self.base_url}{path}"
        for attempt in range(self.retries + 1):
            try:
                return self._once(method, path, body, where)
            except _Transient as exc:
                if attempt == self.retries:
                    raise ServerError(
                        f"{where} failed after {attempt + 1} attempts: {exc}; is the server overloaded or "
                        "down? (lower --max-concurrency, or retry later: finished answers are cached)"
                    ) from None
                delay = min(MAX_BACKOFF_S, self.backoff * 2**attempt)
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, MAX_BACKOFF_S))
                self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _once(self, method: str, path: str, body: dict[str, Any] | None, where: str) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                raw = reply.read()
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc.read() or b"")
            if exc.code in (408, 429) or exc.code >= 500:
                raise _Transient(f"HTTP {exc.code} ({detail})", _retry_after(exc.headers)) from None
            hint = " (does the base URL end in /v1?)" if exc.code == 404 else ""
            raise ServerError(f"{where}: HTTP {exc.code}: {detail}{hint}", exc.code) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ConnectionRefusedError):
                raise ServerError(
                    f"cannot connect to {self.base_url}: connection refused; start the server (e.g. "
                    "`vllm serve NAME` or `transformers serve NAME`) or fix the base URL"
                ) from None
            if isinstance(reason, socket.gaierror):
                raise ServerError(f"cannot resolve the host of {self.base_url}: {reason}") from None
            if isinstance(reason, TimeoutError | ConnectionError):
                raise _Transient(f"{type(reason).__name__}: {reason}") from None
            raise ServerError(f"cannot reach {self.base_url}: {_one_line(str(reason))}") from None
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            # A time-out while reading, or the server dropping the connection mid-reply.
            raise _Transient(f"{type(exc).__name__}: {_one_line(str(exc))}") from None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ServerError(
                f"{where}: malformed reply (not JSON): {_one_line(raw.decode('utf-8', 'replace'), 120)!r}"
            ) from None


@dataclass
class ServedModel:
    """A model behind an OpenAI-compatible server; what `debug.models.load` returns for an `openai:` id.

    Attributes:
        model_id: The id it was loaded by (`openai:NAME@URL`).
        served_name: The model name the server lists (sent as `model` in every request).
        base_url: The API root (ends in `/v1` for the usual servers).
        info: The stable fields (`STABLE_MODEL_FIELDS`) of the server's `/v1/models` entry for it.
        fingerprint: Hash of base URL, served name and `info`; keys the answer cache and pairs runs.
        client: The HTTP client.
        tokenizer: The model's tokenizer when it is available locally (exact token budgets, chat prompts
            rendered for the record), else None.
        echo_logprobs: Whether the server returns prompt log-probs (`echo` + `logprobs`); None until probed.
    """

    model_id: str
    served_name: str
    base_url: str
    info: dict[str, Any]
    fingerprint: str
    client: Client
    tokenizer: Any = None
    echo_logprobs: bool | None = None
    _probe: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def model(self) -> Any:
        """Served models have no weights here.

        Raises:
            WeightsRequiredError: Always (one line naming the fix).
        """
        raise WeightsRequiredError(weights_message(self.model_id, "this step"))

    @property
    def placement(self) -> str:
        """Where the model runs, for reports: the server's base URL."""
        return f"server {self.base_url}"

    @property
    def context_length(self) -> int | None:
        """The server's `max_model_len` for the model (vLLM reports it), else None."""
        value = self.info.get("max_model_len")
        return value if isinstance(value, int) and value > 0 else None


def weights_message(model_id: str, purpose: str) -> str:
    """The one-line refusal of a weights-only step on a served model."""
    name = model_id[len(OPENAI_PREFIX) :].split("@http", 1)[0] if is_served_id(model_id) else model_id
    return (
        f"{purpose} needs the model's weights in this process, but {model_id!r} is served over HTTP; "
        f"load the same model by its hub id or local folder instead (e.g. {name!r})"
    )


def model_entries(reply: Any, base_url: str) -> list[dict[str, Any]]:
    """The model entries of a `/v1/models` reply.

    Raises:
        ServerError: When the reply is not an OpenAI model list.
    """
    data = reply.get("data") if isinstance(reply, dict) else None
    if not isinstance(data, list) or not all(
        isinstance(e, dict) and isinstance(e.get("id"), str) for e in data
    ):
        raise ServerError(
            f"GET {base_url}/models: malformed reply (expected {{'data': [{{'id': ...}}, ...]}}); is "
            f"{base_url} an OpenAI-compatible API?"
        )
    return data


def served_fingerprint(base_url: str, served_name: str, info: dict[str, Any]) -> str:
    """16 hex digits over the base URL, the served name and the model's stable `/v1/models` fields."""
    text = json.dumps({"base_url": base_url, "served_name": served_name, "model": info}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def connect(
    model_id: str,
    *,
    client: Client | None = None,
    tokenizer_loader: Callable[[Sequence[str]], Any] | None = None,
) -> ServedModel:
    """Check that the server lists the model (one `GET /models`) and describe it.

    Args:
        model_id: `openai:<served-name>[@<base-url>]`.
        client: The HTTP client (default: one for the id's base URL).
        tokenizer_loader: Called with candidate names (the served name, the server's `root`) to find the
            tokenizer locally; returns a tokenizer or None. None skips the search.

    Raises:
        ServerError: Bad id, unreachable server, malformed reply, or a name the server does not list.
    """
    served_name, base_url = parse_model_id(model_id)
    client = client or Client(base_url)
    entries = model_entries(client.get("/models"), base_url)
    entry = next((e for e in entries if e["id"] == served_name), None)
    if entry is None:
        names = ", ".join(repr(e["id"]) for e in entries[:10]) or "none"
        more = f" (and {len(entries) - 10} more)" if len(entries) > 10 else ""
        raise ServerError(
            f"the server at {base_url} serves no model named {served_name!r}; it serves {names}{more}"
        )
    info = {key: entry[key] for key in STABLE_MODEL_FIELDS if key in entry}
    candidates = list(dict.fromkeys(n for n in (served_name, info.get("root")) if isinstance(n, str) and n))
    tokenizer = tokenizer_loader(candidates) if tokenizer_loader is not None else None
    return ServedModel(
        model_id=model_id,
        served_name=served_name,
        base_url=base_url,
        info=info,
        fingerprint=served_fingerprint(base_url, served_name, info),
        client=client,
        tokenizer=tokenizer,
    )


@dataclass
class Request:
    """One program's greedy request.

    Attributes:
        prompt: The prompt text (`/v1/completions`), or the user message when `chat`.
        max_tokens: Token budget.
        stop_at_newline: Cut the reply after a newline that follows some text (direct answers).
        answer: The expected answer's continuation, whose log-probability is asked for (completions only).
        chat: Send one user message to `/v1/chat/completions` instead.
        chat_template_kwargs: Sent as `chat_template_kwargs` (vLLM, SGLang, `transformers serve`).
    """

    prompt: str
    max_tokens: int
    stop_at_newline: bool = True
    answer: str | None = None
    chat: bool = False
    chat_template_kwargs: dict[str, Any] | None = None


def apply_stop_rule(text: str, stop_at_newline: bool) -> str:
    """`text` up to and including the first newline that follows some non-blank text (the scorer's rule)."""
    if not stop_at_newline:
        return text
    spoke = False
    for i, char in enumerate(text):
        if char == "\n" and spoke:
            return text[: i + 1]
        spoke = spoke or not char.isspace()
    return text


def _malformed(model: ServedModel, path: str, what: str) -> ServerError:
    return ServerError(f"POST {model.base_url}{path}: malformed reply ({what})")


def _first_choice(model: ServedModel, reply: Any, path: str) -> dict[str, Any]:
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _malformed(model, path, "no choices")
    return choices[0]


def complete(model: ServedModel, request: Request) -> str:
    """The greedy reply text, stop rule applied.

    Raises:
        ServerError: See `Client.request`; also a reply without text.
    """
    if request.chat:
        body: dict[str, Any] = {
            "model": model.served_name,
            "messages": [{"role": "user", "content": request.prompt}],
            "max_tokens": request.max_tokens,
            "temperature": 0,
        }
        if request.chat_template_kwargs:
            body["chat_template_kwargs"] = request.chat_template_kwargs
        path = "/chat/completions"
        message = _first_choice(model, model.client.post(path, body), path).get("message")
        if not isinstance(message, dict):
            raise _malformed(model, path, "choices[0] has no message")
        text = message.get("content")
        text = "" if text is None else text  # a reply made only of reasoning or tool calls has no content
    else:
        body = {
            "model": model.served_name,
            "prompt": request.prompt,
            "max_tokens": request.max_tokens,
            "temperature": 0,
        }
        path = "/completions"
        text = _first_choice(model, model.client.post(path, body), path).get("text")
    if not isinstance(text, str):
        raise _malformed(model, path, "choices[0] has no text")
    return apply_stop_rule(text, request.stop_at_newline)


def echo_logprob(model: ServedModel, prompt: str, answer: str) -> tuple[bool, float | None]:
    """(server returned prompt log-probs, summed log-prob of `answer` after `prompt`).

    Asks `/v1/completions` for `prompt + answer` with `echo` and `logprobs`, and sums the log-probs of the
    tokens that cover the answer's characters (located by `text_offset`; a token straddling the boundary
    counts, since the server tokenizes prompt and answer together).
    """
    full = prompt + answer
    body = {
        "model": model.served_name,
        "prompt": full,
        "max_tokens": 1,
        "temperature": 0,
        "echo": True,
        "logprobs": 1,
    }
    choice = _first_choice(model, model.client.post("/completions", body), "/completions")
    logprobs = choice.get("logprobs")
    text = choice.get("text")
    if not (isinstance(logprobs, dict) and isinstance(text, str) and text.startswith(full)):
        return False, None
    values, offsets = logprobs.get("token_logprobs"), logprobs.get("text_offset")
    if not (isinstance(values, list) and isinstance(offsets, list) and len(values) == len(offsets)):
        return False, None
    total, seen = 0.0, False
    for i, start in enumerate(offsets):
        end = offsets[i + 1] if i + 1 < len(offsets) else len(text)
        if not isinstance(start, int) or start >= len(full) or end <= len(prompt):
            continue
        value = values[i]
        if not isinstance(value, int | float):
            return True, None  # the first prompt token has no log-prob: the answer cannot be scored
        total, seen = total + float(value), True
    return True, (total if seen else None)


def answer_logprob(model: ServedModel, prompt: str, answer: str) -> float | None:
    """The answer's log-probability, or None where the server gives no prompt log-probs (probed once)."""
    if model.echo_logprobs is False:
        return None
    with model._probe:  # the first caller probes; the others wait for its verdict
        if model.echo_logprobs is None:
            try:
                supported, value = echo_logprob(model, prompt, answer)
            except ServerError as exc:
                if exc.status is None or not 400 <= exc.status < 500:
                    raise
                supported, value = False, None  # the server refuses echo or logprobs outright
            model.echo_logprobs = supported
            return value
    if not model.echo_logprobs:
        return None
    return echo_logprob(model, prompt, answer)[1]


def serve_one(model: ServedModel, request: Request) -> tuple[str, float | None]:
    """(reply text, answer log-prob or None) for one request."""
    text = complete(model, request)
    logprob = None
    if not request.chat and request.answer is not None:
        logprob = answer_logprob(model, request.prompt, request.answer)
    return text, logprob


def serve_many(
    model: ServedModel,
    requests: Iterable[tuple[Any, Request]],
    *,
    max_concurrency: int | None = None,
    on_done: Callable[[Any, str, float | None], None] | None = None,
) -> dict[Any, tuple[str, float | None]]:
    """Send requests with at most `max_concurrency` in flight; results by key.

    `on_done(key, text, logprob)` runs in the calling thread as each request finishes (answers are cached as
    they arrive, so a failed run keeps what finished). The first failure is raised at once; requests not yet
    started are dropped (those already sent finish in the background).

    Raises:
        ServerError: The first request that failed.
        ValueError: `max_concurrency` below 1.
    """
    workers = DEFAULT_MAX_CONCURRENCY if max_concurrency is None else int(max_concurrency)
    if workers < 1:
        raise ValueError(f"max_concurrency must be a positive integer; got {max_concurrency!r}")
    items = list(requests)
    results: dict[Any, tuple[str, float | None]] = {}
    if not items:
        return results
    pool = ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="debug-serve")
    try:
        pending = {pool.submit(serve_one, model, request): key for key, request in items}
        while pending:
            done, _ = wait(pending, return_when=FIRST_EXCEPTION)
            failure: BaseException | None = None
            for future in done:
                key = pending.pop(future)
                error = future.exception()
                if error is not None:
                    failure = failure or error
                    continue
                text, logprob = future.result()
                results[key] = (text, logprob)
                if on_done is not None:
                    on_done(key, text, logprob)
            if failure is not None:
                raise failure
    except BaseException:
        # A failure or Ctrl-C: drop what has not started instead of waiting for every request.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results
