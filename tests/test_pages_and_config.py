"""Pure rules: page names, settings from the environment, trace headers."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from werkzeug.datastructures import Headers

from conftest import ROOT
from counter import config, logs, pages
from counter.config import ConfigError, Settings


@pytest.mark.parametrize(
    "page",
    ["/", "/blog/post-1", "/blog/", "/caf%C3%A9", "/café", "/a b", "/.well-known", "/a/.../b"],
)
def test_reasonable_pages_are_accepted(page: str) -> None:
    assert pages.problem(page) is None


@pytest.mark.parametrize(
    "page",
    [
        *("", "x", "/" * 257, "/\t", "/\x7f", "/a?b", "/a#b", "/\ud800"),
        *("/blog/../x", "/blog/./x", "/blog/..", "/blog/%2e%2e/x", "/blog/%2E./x", "/%252e%252e"),
        *("//a", "/a//b", "//"),
    ],
)
def test_malformed_pages_are_named(page: str) -> None:
    assert pages.problem(page)


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.default_page == "/"
    assert settings.deadline_seconds == 5.0
    assert not settings.origin_allowed("https://anyone.example")
    assert settings.page_allowed("/anything")


@pytest.mark.parametrize(("value", "database"), [("(default)", ""), ("", ""), ("visits", "visits")])
def test_the_default_database_is_named_as_the_api_expects(value: str, database: str) -> None:
    assert Settings.from_env({"DATASTORE_DATABASE": value}).database == database


def test_origins_are_compared_without_case_or_trailing_slash() -> None:
    settings = Settings.from_env(
        {"ALLOWED_ORIGINS": " https://Me.Example/ , http://localhost:8000"}
    )
    assert settings.origin_allowed("https://me.example")
    assert settings.origin_allowed("http://localhost:8000")
    assert not settings.origin_allowed("http://me.example")
    assert not settings.origin_allowed("https://me.example.evil.example")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ALLOWED_ORIGINS", "me.example"),
        ("ALLOWED_ORIGINS", "https://me.example/path"),
        ("ALLOWED_ORIGINS", "ftp://me.example"),
        ("ALLOWED_PAGES", "blog/*"),
        ("DEFAULT_PAGE", "home"),
        ("DATASTORE_DEADLINE_SECONDS", "soon"),
        ("DATASTORE_DEADLINE_SECONDS", "0"),
        ("DATASTORE_DEADLINE_SECONDS", "600"),
        ("UNIQUE_WINDOW_SECONDS", "86401"),
        ("UNIQUE_WINDOW_SECONDS", "-1"),
        ("COUNTER_SHARDS", "many"),
        ("HISTORY", "maybe"),
    ],
)
def test_bad_settings_name_their_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_page_allow_list_takes_exact_pages_and_prefixes() -> None:
    settings = Settings.from_env({"ALLOWED_PAGES": "/,/blog/*"})
    assert settings.page_allowed("/")
    assert settings.page_allowed("/blog/post-1")
    assert not settings.page_allowed("/about")
    assert not settings.page_allowed("/blogger")


@pytest.mark.parametrize(
    ("headers", "trace", "span", "sampled"),
    [
        (
            {"X-Cloud-Trace-Context": "105445AA7843BC8BF206B12000100000/99;o=1"},
            "105445aa7843bc8bf206b12000100000",
            "99",
            True,
        ),
        (
            {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"},
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
            False,
        ),
    ],
)
def test_trace_headers_become_cloud_logging_fields(
    headers: dict[str, str], trace: str, span: str, sampled: bool
) -> None:
    fields = logs.trace_fields(Headers(headers), "proj")
    assert fields["logging.googleapis.com/trace"] == f"projects/proj/traces/{trace}"
    assert fields["logging.googleapis.com/spanId"] == span
    assert fields["logging.googleapis.com/trace_sampled"] is sampled


@pytest.mark.parametrize("value", ["", "nothex/1", "105445aa/1;o=1", "a" * 32 + "/1;o=1 {}"])
def test_malformed_trace_headers_are_ignored(value: str) -> None:
    assert logs.trace_fields(Headers({"X-Cloud-Trace-Context": value}), "proj") == {}


def test_a_bad_setting_stops_the_function_at_start_up() -> None:
    env = {**os.environ, "ALLOWED_ORIGINS": "me.example", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", "import main"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "ALLOWED_ORIGINS: 'me.example' is not an origin" in result.stderr


def test_a_unique_window_of_up_to_a_day_is_accepted() -> None:
    settings = Settings.from_env({"UNIQUE_WINDOW_SECONDS": str(config.MAX_UNIQUE_WINDOW_SECONDS)})
    assert settings.unique_window_seconds == 86_400


def test_deploy_settings_come_from_environment_then_repository_variables_then_config() -> None:
    def deploy_settings(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        # -S -E: no site-packages and no PYTHON* variables, as a bare python3 runs it.
        return subprocess.run(
            [sys.executable, "-S", "-E", "-m", "scripts.deploy_settings", *args],
            cwd=ROOT,
            env={"PATH": os.environ["PATH"], **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    given = {
        "ALLOWED_PAGES": "/, /blog/* ",  # beats the repository variable; kept whole
        "DAILY_WRITE_LIMIT": "0",  # beats the deployed default
        "HISTORY": "",  # empty is unset, as the function reads it
        # As GitHub's ${{ toJSON(vars) }} gives them.
        "REPOSITORY_VARIABLES": '{\n  "ALLOWED_PAGES": "/from-github",\n  "COUNT_BOTS": "true",\n'
        '  "GCP_PROJECT": "p-1"\n}',
    }
    result = deploy_settings(**given)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(" ")[0] for line in lines] == list(config.env_names(deploy="passed-on"))
    assert {line for line in lines if line.split(" ")[1] != "unset"} == {
        "ALLOWED_PAGES given /, /blog/* ",
        "COUNT_BOTS given true",
        "UNIQUE_WINDOW_SECONDS deployed 1800",
        "DAILY_WRITE_LIMIT given 0",
    }
    # --defaults, for deploy.sh --help: the lines of a deploy with nothing set.
    defaults = deploy_settings("--defaults", **given)
    assert defaults.stdout == deploy_settings().stdout
    assert "DAILY_WRITE_LIMIT deployed 10000\n" in defaults.stdout
    # A value that would break its line is refused, naming its variable.
    for env, name in [
        ({"DEFAULT_PAGE": "/a\n/b"}, "DEFAULT_PAGE"),
        ({"REPOSITORY_VARIABLES": '{"COUNT_BOTS": "true\\nHISTORY given x"}'}, "COUNT_BOTS"),
        ({"REPOSITORY_VARIABLES": "COUNT_BOTS=true"}, "REPOSITORY_VARIABLES"),
    ]:
        refused = deploy_settings(**env)
        assert (refused.returncode, refused.stdout) == (2, "")
        assert refused.stderr.startswith(f"{name} ")


def test_the_configuration_doc_documents_every_setting_and_no_other() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    table = doc.split("\n## The function's settings\n", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([A-Z_]+)` \|", table, flags=re.MULTILINE)
    assert sorted(documented) == sorted(config.ENV_NAMES)
