"""The documentation, checked against the code: each command block marked `<!-- tested: NAME -->`
is read from README.md or docs/ itself and run, with free ports in place of 8080 and 8081, so it
cannot drift; and every relative link in them leads to a file, and to a heading where it names one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from conftest import ARTIFACTS, ROOT, LiveServer, readme_block
from counter import config
from scripts.emulator import free_port


def commands(block: str) -> list[str]:
    """The block's command lines, without comment lines and blank ones."""
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def promised_answer(command: str) -> object:
    """The JSON answer the command's trailing comment promises."""
    comment = command.split("  # ", 1)[1].strip()
    answer, _ = json.JSONDecoder().raw_decode(comment)
    return answer


def shell_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A shell's environment without the function's settings (the README sets what it needs),
    with this virtualenv's tools (HTTPie) on PATH and HTTPie kept off the network."""
    env = {k: v for k, v in os.environ.items() if k not in config.ENV_NAMES}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    httpie = tmp_path / "httpie"
    httpie.mkdir(exist_ok=True)
    (httpie / "config.json").write_text('{"disable_update_warnings": true}')
    env["HTTPIE_CONFIG_DIR"] = str(httpie)
    return {**env, **extra}


def run_and_check(command: str, env: dict[str, str]) -> None:
    """Run one command line as a shell would; its output is the answer its comment promises."""
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{command}\n{result.stderr}"
    assert json.loads(result.stdout) == promised_answer(command), command


def test_try_it_commands_answer_as_the_readme_says(
    start_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    # A namespace of its own: like a fresh `make run`, the page "/" starts at nothing.
    server = start_server("readme-try-it", DATASTORE_NAMESPACE=f"readme-{uuid.uuid4().hex}")
    env = shell_env(tmp_path)
    lines = commands(readme_block("try-it"))
    assert any(line.startswith("http ") for line in lines), "the HTTPie example is gone"
    for line in lines:
        run_and_check(line.replace(":8080", f":{server.port}"), env)


def _started(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        # A session of its own, so the emulator's Java and the reloader's child stop with it.
        return subprocess.Popen(
            ["bash", "-c", command],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    # gcloud moves the emulator into a process group of its own, but it stays in the session
    # the terminal's shell started: stop every process of that session.
    for signum in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + 15
        while (members := _in_session(process.pid)) and time.monotonic() < deadline:
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
            time.sleep(0.2)
    process.wait()


def _in_session(session: int) -> list[int]:
    """The processes of a session still running (zombies, which only wait to be reaped, aside)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z" and os.getsid(int(entry.name)) == session:
                    members.append(int(entry.name))
    return members


def _wait_until_answers(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited early; see {log}"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers, if only to refuse
        except OSError:
            time.sleep(0.25)
    pytest.fail(f"{url} did not answer within 90 s; see {log}")


@pytest.fixture
def terminals() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes standing in for the README's terminals; all stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in reversed(started):
        _stop(process)


def test_functions_framework_by_hand_counts_a_visit(
    terminals: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    assert (ROOT / ".venv/bin/activate").exists(), "make test creates .venv, which it uses"
    emulator_port, function_port = free_port(), free_port()

    def ported(text: str) -> str:
        return text.replace("8081", str(emulator_port)).replace("8080", str(function_port))

    block = ported(readme_block("functions-framework"))
    emulator, function, visit = re.split(r"^# Terminal \d.*\n", block, flags=re.MULTILINE)[1:]
    # functions-framework's --port defaults to $PORT, and only then to 8080.
    env = shell_env(tmp_path, PORT=str(function_port))
    ARTIFACTS.mkdir(exist_ok=True)
    logs = [ARTIFACTS / f"readme-{name}.log" for name in ("emulator", "function")]

    terminals.append(_started(emulator, env, logs[0]))
    terminals.append(_started(function, env, logs[1]))
    _wait_until_answers(f"http://127.0.0.1:{emulator_port}/", terminals[0], logs[0])
    _wait_until_answers(f"http://127.0.0.1:{function_port}/", terminals[1], logs[1])

    [command] = commands(visit)
    run_and_check(command, env)


# --- links ---

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", flags=re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", flags=re.DOTALL)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^\s)>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", flags=re.MULTILINE)


def prose(markdown: str) -> str:
    """The text outside fenced code blocks and code spans, where a link is a link."""
    return _CODE_SPAN.sub("", _FENCE.sub("", markdown))


def links(markdown: str) -> list[str]:
    """The targets of the inline links and images of a Markdown text."""
    return _LINK.findall(prose(markdown))


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    return re.sub(r"[^\w\- ]", "", text.lower().replace("`", "")).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2 … as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(_FENCE.sub("", markdown)):
        slug = anchor(heading)
        found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return found


def broken_links(document: Path, targets: Iterable[str]) -> list[str]:
    """The relative targets of a document that lead to no file, or to no heading of one."""
    broken = []
    for target in targets:
        parts = urlsplit(target)
        if parts.scheme or parts.netloc:
            continue  # a web address: not this repository's to check
        path = (document.parent / unquote(parts.path)).resolve() if parts.path else document
        if (
            not path.exists()
            or ROOT not in (path, *path.parents)
            or (
                parts.fragment
                and path.suffix == ".md"
                and unquote(parts.fragment) not in anchors(path.read_text(encoding="utf-8"))
            )
        ):
            broken.append(target)
    return broken


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        (
            "Coming from the classic Flask `/visits` design",
            "coming-from-the-classic-flask-visits-design",
        ),
        ("A budget alert: `--budget`", "a-budget-alert---budget"),
        ("deploy.sh's own settings", "deployshs-own-settings"),
        ("Who is counted, and what is kept", "who-is-counted-and-what-is-kept"),
        ("With --gateway", "with---gateway"),
    ],
)
def test_anchors_follow_githubs_rule(heading: str, expected: str) -> None:
    assert anchor(heading) == expected


def test_a_repeated_heading_gets_a_number() -> None:
    assert anchors("# Notes\n## Notes\n### Notes\n") == {"notes", "notes-1", "notes-2"}


def test_links_in_code_are_not_links() -> None:
    text = "[a](a.md) `[b](b.md)`\n```markdown\n![c](c.png)\n```\n![d](docs/d.png)\n"
    assert links(text) == ["a.md", "docs/d.png"]


def test_a_broken_link_and_a_missing_heading_are_found() -> None:
    targets = ["docs/api.md#errors", "docs/api.md#no-such-heading", "docs/nowhere.md", "#more"]
    assert broken_links(ROOT / "README.md", targets) == [
        "docs/api.md#no-such-heading",
        "docs/nowhere.md",
    ]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(document: Path) -> None:
    assert broken_links(document, links(document.read_text(encoding="utf-8"))) == []


def test_the_readme_links_to_every_doc() -> None:
    linked = {urlsplit(target).path for target in links((ROOT / "README.md").read_text())}
    docs = {path.relative_to(ROOT).as_posix() for path in DOCUMENTS[1:]}
    assert docs <= linked, f"README.md does not link to {sorted(docs - linked)}"
