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


def test_deploy_passes_on_exactly_the_settings_config_reads() -> None:
    script = (ROOT / "deploy.sh").read_text()
    [listed] = re.findall(r"^FUNCTION_SETTINGS=\(([^)]*)\)", script, flags=re.MULTILINE)
    assert sorted(listed.split()) == sorted(config.env_names(deploy="passed-on"))


def test_the_readme_documents_every_setting_and_no_other() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([A-Z_]+)` \|", table, flags=re.MULTILINE)
    assert sorted(documented) == sorted(config.ENV_NAMES)
