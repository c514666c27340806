"""Shared fixtures: one emulator for the suite, settings per test, real servers on loopback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import flask.testing
import functions_framework
import grpc
import pytest
import requests
from google.cloud.datastore_v1 import types
from google.protobuf.message import Message

from counter import config, instance, limits
from counter import messages as ds
from counter.datastore import Database
from google_standin import GoogleStandIn
from scripts.emulator import Emulator, EmulatorError, free_port

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "visit-counter-test"
SITE = "https://site.example"
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator | None]:
    """The suite's emulator, started here unless DATASTORE_EMULATOR_HOST names one already."""
    if os.environ.get("DATASTORE_EMULATOR_HOST"):
        yield None
        return
    yield from _run_emulator("emulator")


@pytest.fixture(scope="session")
def emulator_host(emulator: Emulator | None) -> str:
    """DATASTORE_EMULATOR_HOST for the suite."""
    return emulator.host if emulator else os.environ["DATASTORE_EMULATOR_HOST"]


@pytest.fixture(scope="session")
def own_emulator(emulator: Emulator | None) -> Iterator[Emulator]:
    """An emulator this suite may freeze: the suite's own, or a private one."""
    if emulator is not None:
        yield emulator
        return
    yield from _run_emulator("emulator-private")


def _run_emulator(name: str) -> Iterator[Emulator]:
    ARTIFACTS.mkdir(exist_ok=True)
    emu = Emulator()
    try:
        emu.start(ARTIFACTS / f"{name}.log")
    except EmulatorError as exc:
        pytest.fail(str(exc), pytrace=False)
    _warm_up(emu.host)
    try:
        yield emu
    finally:
        emu.stop()


def _warm_up(host: str) -> None:
    """Run each kind of RPC once: a fresh emulator takes seconds over its first ones."""
    settings = config.Settings(
        project=PROJECT,
        emulator_host=host,
        namespace="warm-up",
        deadline_seconds=60,
        unique_window_seconds=60,
    )
    counter = instance.build(settings)
    counter.counts.read("/")
    counter.counts.increment("/")
    counter.unique.visit("/", "192.0.2.1", "warm-up")
    counter.unique.visit("/", "192.0.2.1", "warm-up")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, emulator_host: str) -> Callable[..., None]:
    """Set the function's environment for this test; settings are read afresh after each call.

    Every setting starts unset, whatever the shell exported, so the defaults are what is tested.
    """
    for name in config.ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATASTORE_EMULATOR_HOST", emulator_host)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    monkeypatch.setenv("ALLOWED_ORIGINS", SITE)

    def apply(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        config.settings.cache_clear()
        limits.for_settings.cache_clear()  # each test starts with no client seen

    apply()
    yield apply
    config.settings.cache_clear()


@pytest.fixture(scope="session")
def app() -> flask.Flask:
    """The function as functions-framework serves it, loaded from main.py."""
    return functions_framework.create_app(target="visits", source=str(ROOT / "main.py"))


@pytest.fixture
def client(app: flask.Flask, env: Callable[..., None]) -> flask.testing.FlaskClient:
    """A test client for the function, on the emulator, with this test's environment."""
    return app.test_client()


@pytest.fixture
def page() -> str:
    """A page no other test has counted."""
    return f"/test/{uuid.uuid4().hex}"


@pytest.fixture
def namespace() -> str:
    """A Datastore namespace no other test writes to."""
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
def standin(emulator_host: str, clock: FakeClock) -> Iterator[GoogleStandIn]:
    """Google's metadata server and Datastore (over TLS) on loopback, in front of the suite's
    emulator, on a clock the test moves by hand."""
    with GoogleStandIn(emulator_host, PROJECT, clock=clock) as server:
        yield server


class RpcCounter(grpc.UnaryUnaryClientInterceptor):
    """Counts the Datastore RPCs a store makes, by method name, and keeps their requests (as
    plain protobuf, unwrapped from the library's proto-plus types)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.requests: list[object] = []
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget the RPCs made so far."""
        with self._lock:
            self.calls.clear()
            self.requests.clear()

    def intercept_unary_unary(self, continuation, client_call_details, request):
        with self._lock:
            self.calls.append(client_call_details.method.rsplit("/", 1)[-1])
            self.requests.append(type(request).pb(request))
        return continuation(client_call_details, request)


class FakeClock:
    """A clock the test moves by hand, so windows and days pass without sleeping."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0  # a fixed moment mid-day (UTC): 2027-01-15 08:00

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    """The clock the function's store reads: windows and days pass without sleeping."""
    return FakeClock()


@pytest.fixture
def rpcs() -> RpcCounter:
    """The Datastore RPCs the function's store makes in this test."""
    return RpcCounter()


def readme_block(name: str) -> str:
    """The fenced block that follows `<!-- tested: name -->` in README.md or a docs/*.md file."""
    marker = re.escape(f"<!-- tested: {name} -->")
    blocks = [
        match.group(1)
        for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        for match in re.finditer(
            rf"{marker}\n```\w*\n(.*?)\n```", path.read_text(encoding="utf-8"), flags=re.DOTALL
        )
    ]
    assert len(blocks) == 1, f"{len(blocks)} blocks marked <!-- tested: {name} -->, not one"
    return blocks[0]


def function_source(root: Path) -> list[str]:
    """What a deploy must upload: main.py, requirements.txt, the package's modules, its folder."""
    package = sorted(path.relative_to(root).as_posix() for path in (root / "counter").glob("*.py"))
    return ["counter/", *package, "main.py", "requirements.txt"]


def rpc(db: Database, method: str, request: Message) -> Message:
    """One Datastore call through the library's client, bypassing the product's own methods:
    `method` is the client's (lookup, run_query …), request and answer plain protobuf."""
    wrapper = getattr(types, type(request).DESCRIPTOR.name)
    response = getattr(db.client, method)(request=wrapper.wrap(request), timeout=10)
    return type(response).pb(response)


def run_query(db: Database, kind: str = "") -> list[ds.Entity]:
    """Every entity of a kind (or of every kind) in the database's namespace, batch by batch."""
    entities: list[ds.Entity] = []
    cursor = b""
    while True:
        query = ds.Query(kind=[ds.KindExpression(name=kind)] if kind else [], start_cursor=cursor)
        request = ds.RunQueryRequest(
            project_id=db.project,
            partition_id=ds.PartitionId(project_id=db.project, namespace_id=db.settings.namespace),
            query=query,
        )
        batch = rpc(db, "run_query", request).batch
        entities += [result.entity for result in batch.entity_results]
        if batch.more_results != ds.QueryResultBatch.MoreResultsType.NOT_FINISHED:
            return entities
        cursor = batch.end_cursor


class LiveServer:
    """functions-framework serving main.py in its own process, as `make run` and Cloud Run do."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log_path
        self._log = log_path.open("wb")
        command = [
            sys.executable,
            "-m",
            "functions_framework",
            "--target=visits",
            f"--source={ROOT / 'main.py'}",
            "--host=127.0.0.1",
            f"--port={self.port}",
        ]
        # The shell's own settings stay out: each server runs with exactly the ones given.
        inherited = {k: v for k, v in os.environ.items() if k not in config.ENV_NAMES}
        self.process = subprocess.Popen(
            command, cwd=ROOT, env={**inherited, **env}, stdout=self._log, stderr=self._log
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the function exited early; see {log_path}")
            try:
                requests.options(self.url, timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the function did not start within 30 s; see {log_path}")

    def log_entries(self) -> list[dict]:
        """The structured log lines the function has written so far (other output skipped)."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def stop(self) -> None:
        """Stop the server and wait for it."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture(scope="session")
def start_server(emulator_host: str) -> Iterator[Callable[..., LiveServer]]:
    """Start real function servers with extra environment; all are stopped after the suite."""
    ARTIFACTS.mkdir(exist_ok=True)
    servers: list[LiveServer] = []

    def start(name: str, **env: str) -> LiveServer:
        base = {
            "DATASTORE_EMULATOR_HOST": emulator_host,
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "ALLOWED_ORIGINS": SITE,
            # These servers are driven hard from one address; the limit has tests of its own.
            "RATE_LIMIT_PER_MINUTE": "0",
        }
        server = LiveServer({**base, **env}, ARTIFACTS / f"server-{name}.log")
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def live_server(start_server: Callable[..., LiveServer]) -> str:
    """Base URL of a real functions-framework server on the suite's emulator."""
    return start_server("live").url
