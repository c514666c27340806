"""Settings read once from the environment: each field names its variable, default and parser.

The Settings dataclass is the one list of settings. Everything else that lists them (the tests'
clean environment, deploy.sh's pass-through list, docs/configuration.md's table, the benchmark)
takes the names from `ENV_NAMES` or is checked against it by a test.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from counter import pages

MAX_UNIQUE_WINDOW_SECONDS = 86_400
"""Longest unique-visitor window: visitor hashes are salted per UTC day, and a visit is checked
against today's salt and yesterday's, so a window of up to one day is honoured across midnight."""

Deploy = Literal["passed-on", "set-by-deploy", "local-only"]


class ConfigError(ValueError):
    """A setting in the environment is missing or malformed."""


def setting(
    env: str,
    default: Any,
    parse: Callable[[str], Any],
    *,
    deploy: Deploy = "passed-on",
    deployed: str | None = None,
) -> Any:
    """A Settings field read from the variable `env` with `parse`; `default` when unset or empty.

    deploy says how deploy.sh treats it: passed on when set, set by deploy.sh itself, or only
    meaningful on a developer's machine. deployed is the value deploy.sh gives it when the user
    leaves it unset; None leaves it to the function's own default.
    """
    return dataclasses.field(
        default=default,
        metadata={"env": env, "parse": parse, "deploy": deploy, "deployed": deployed},
    )


def _text(raw: str) -> str:
    return raw


def _flag(raw: str) -> bool:
    value = raw.lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{raw!r} is not true or false")


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a whole number") from None
        if not low <= value <= high:
            raise ValueError(f"{raw!r} must be between {low} and {high}")
        return value

    return parse


def _seconds(maximum: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a number of seconds") from None
        if not 0 < value <= maximum:
            raise ValueError(f"{raw!r} must be more than 0 and at most {maximum:g}")
        return value

    return parse


def _database(raw: str) -> str:
    # The API names the default database by an empty id; gcloud calls it (default).
    return "" if raw == "(default)" else raw


def _origins(raw: str) -> frozenset[str]:
    return frozenset(_origin(part) for part in _split(raw))


def _origin(value: str) -> str:
    if value == "*":
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError(
            f"{value!r} is not an origin; write it as https://example.com "
            "(scheme and host, optional port, no path), or * to allow any origin"
        )
    return f"{parts.scheme}://{parts.netloc}".lower()


def _page(raw: str) -> str:
    problem = pages.problem(raw)
    if problem:
        raise ValueError(problem)
    return raw


def _page_patterns(raw: str) -> tuple[str, ...]:
    patterns = _split(raw)
    for pattern in patterns:
        problem = pages.problem(pattern.removesuffix("*") or "/")
        if problem:
            raise ValueError(f"{pattern!r}: {problem}")
    return tuple(patterns)


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@dataclass(frozen=True)
class Settings:
    """Everything the function can be configured with, one field per environment variable."""

    project: str | None = setting("GOOGLE_CLOUD_PROJECT", None, _text, deploy="set-by-deploy")
    allowed_origins: frozenset[str] = setting(
        "ALLOWED_ORIGINS", frozenset(), _origins, deploy="set-by-deploy"
    )
    allowed_pages: tuple[str, ...] = setting("ALLOWED_PAGES", (), _page_patterns)
    default_page: str = setting("DEFAULT_PAGE", "/", _page)
    database: str = setting("DATASTORE_DATABASE", "", _database, deploy="set-by-deploy")
    namespace: str = setting("DATASTORE_NAMESPACE", "", _text)
    deadline_seconds: float = setting("DATASTORE_DEADLINE_SECONDS", 5.0, _seconds(60.0))
    # Off here, so that a local run counts every hit; deployed, repeat visits within half an hour
    # count once.
    unique_window_seconds: int = setting(
        "UNIQUE_WINDOW_SECONDS", 0, _integer(0, MAX_UNIQUE_WINDOW_SECONDS), deployed="1800"
    )
    count_bots: bool = setting("COUNT_BOTS", False, _flag)
    count_on_get: bool = setting("COUNT_ON_GET", False, _flag)
    # 0: the client is the right-most forwarded address that is not Google's or private.
    forwarded_hops: int = setting("FORWARDED_HOPS", 0, _integer(0, 10))
    rate_limit_per_minute: int = setting("RATE_LIMIT_PER_MINUTE", 60, _integer(0, 100_000))
    # No limit here; deployed, 10,000 counted visits a day per instance: the free tier's 20,000
    # daily writes at two writes a visit (so several instances may together count more).
    daily_write_limit: int = setting(
        "DAILY_WRITE_LIMIT", 0, _integer(0, 1_000_000_000), deployed="10000"
    )
    badge_counts: bool = setting("BADGE_COUNTS", False, _flag)
    shards: int = setting("COUNTER_SHARDS", 1, _integer(1, 100))
    history: bool = setting("HISTORY", True, _flag)
    emulator_host: str | None = setting("DATASTORE_EMULATOR_HOST", None, _text, deploy="local-only")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from environment variables; raise ConfigError naming a bad one."""
        values = {}
        for field in dataclasses.fields(cls):
            name = field.metadata["env"]
            raw = (env.get(name) or "").strip()
            if not raw:
                continue  # unset or empty: the default
            try:
                values[field.name] = field.metadata["parse"](raw)
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        return cls(**values)

    def origin_allowed(self, origin: str) -> bool:
        """Whether a browser on this origin may call the function."""
        return "*" in self.allowed_origins or origin.lower() in self.allowed_origins

    def page_allowed(self, page: str) -> bool:
        """Whether this page may be counted (all pages when ALLOWED_PAGES is unset)."""
        if not self.allowed_pages:
            return True
        return any(
            page.startswith(p[:-1]) if p.endswith("*") else page == p for p in self.allowed_pages
        )


def env_names(*, deploy: Deploy | None = None) -> tuple[str, ...]:
    """The variables the function reads, in Settings order; only those deploy treats so if given."""
    return tuple(
        field.metadata["env"]
        for field in dataclasses.fields(Settings)
        if deploy is None or field.metadata["deploy"] == deploy
    )


ENV_NAMES = env_names()
"""Every environment variable the function reads."""


def deployed_defaults() -> dict[str, str]:
    """The values deploy.sh gives settings left unset, by variable, in Settings order."""
    return {
        field.metadata["env"]: field.metadata["deployed"]
        for field in dataclasses.fields(Settings)
        if field.metadata["deployed"] is not None
    }


@functools.cache
def settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings.from_env(os.environ)
