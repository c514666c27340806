"""Settings read once from the environment, with a clear error for each bad value."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from counter import pages


class ConfigError(ValueError):
    """A setting in the environment is missing or malformed."""


@dataclass(frozen=True)
class Settings:
    """Everything the function can be configured with."""

    project: str | None = None
    emulator_host: str | None = None
    database: str = ""
    namespace: str = ""
    allowed_origins: frozenset[str] = frozenset()
    allow_any_origin: bool = False
    allowed_pages: tuple[str, ...] = ()
    default_page: str = "/"
    deadline_seconds: float = 5.0
    badge_counts: bool = False
    unique_window_seconds: int = 0
    count_bots: bool = False
    forwarded_hops: int = 1
    shards: int = 1
    coalesce: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from environment variables; raise ConfigError naming a bad one."""
        origins = _split(env.get("ALLOWED_ORIGINS", ""))
        default_page = env.get("DEFAULT_PAGE", "/")
        problem = pages.problem(default_page)
        if problem:
            raise ConfigError(f"DEFAULT_PAGE: {problem}")
        return cls(
            project=env.get("GOOGLE_CLOUD_PROJECT") or None,
            emulator_host=env.get("DATASTORE_EMULATOR_HOST") or None,
            # The API names the default database by an empty id; gcloud calls it (default).
            database=env.get("DATASTORE_DATABASE", "").replace("(default)", ""),
            namespace=env.get("DATASTORE_NAMESPACE", ""),
            allowed_origins=frozenset(_origin(o) for o in origins if o != "*"),
            allow_any_origin="*" in origins,
            allowed_pages=tuple(_page_pattern(p) for p in _split(env.get("ALLOWED_PAGES", ""))),
            default_page=default_page,
            deadline_seconds=_seconds(env, "DATASTORE_DEADLINE_SECONDS", 5.0, maximum=60.0),
            badge_counts=_flag(env, "BADGE_COUNTS"),
            unique_window_seconds=_integer(env, "UNIQUE_WINDOW_SECONDS", 0, 0, 7 * 86_400),
            count_bots=_flag(env, "COUNT_BOTS"),
            forwarded_hops=_integer(env, "FORWARDED_HOPS", 1, 1, 10),
            shards=_integer(env, "COUNTER_SHARDS", 1, 1, 100),
            coalesce=_flag(env, "COALESCE_HITS"),
        )

    def origin_allowed(self, origin: str) -> bool:
        """Whether a browser on this origin may call the function."""
        return self.allow_any_origin or origin.lower() in self.allowed_origins

    def page_allowed(self, page: str) -> bool:
        """Whether this page may be counted (all pages when ALLOWED_PAGES is unset)."""
        if not self.allowed_pages:
            return True
        return any(
            page.startswith(p[:-1]) if p.endswith("*") else page == p for p in self.allowed_pages
        )


@functools.cache
def settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings.from_env(os.environ)


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _origin(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ConfigError(
            f"ALLOWED_ORIGINS: {value!r} is not an origin; write it as https://example.com "
            "(scheme and host, optional port, no path), or * to allow any origin"
        )
    return f"{parts.scheme}://{parts.netloc}".lower()


def _page_pattern(value: str) -> str:
    problem = pages.problem(value.removesuffix("*") or "/")
    if problem:
        raise ConfigError(f"ALLOWED_PAGES: {value!r}: {problem}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, maximum: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number of seconds") from None
    if not 0 < value <= maximum:
        raise ConfigError(f"{name}: {raw!r} must be more than 0 and at most {maximum:g}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}: {raw!r} is not true or false")


def _integer(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}: {raw!r} must be between {low} and {high}")
    return value
