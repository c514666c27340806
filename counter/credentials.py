"""Who the function is to Google: the bearer token every Datastore call carries.

On Cloud Functions (and Cloud Run) the token is the function's service account's, from the
metadata server, fetched with the standard library and kept until shortly before it expires:
google-auth would import requests and cryptography first, tens of milliseconds of every cold
start. Anywhere else (an owner's machine, CI with a key) Application Default Credentials
decide, through google-auth, where start-up time does not matter.

The token goes into each call's metadata from the caller's thread rather than through gRPC's
call credentials, whose callback runs on a thread of gRPC's own: about 0.4 ms of CPU per call.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from typing import Protocol

from counter.config import Settings

TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
PROJECT_PATH = "/computeMetadata/v1/project/project-id"
SCOPES = ("https://www.googleapis.com/auth/datastore",)
_FETCH_TIMEOUT_SECONDS = 3.0
_RENEW_BEFORE_SECONDS = 300
"""A token is renewed this long before it expires, as google-auth does."""


class TokenUnavailable(Exception):
    """No token could be had for now: the metadata server or the token endpoint failed."""


class TokenSource(Protocol):
    """Gives a token valid for a while yet."""

    def token(self) -> str: ...


class MetadataToken:
    """The service account's access token from the metadata server, shared by every call."""

    def __init__(self, host: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self._clock = clock
        self._lock = threading.Lock()
        self._token = ""
        self._renew_at = 0.0

    def token(self) -> str:
        """A token valid for a while yet; one fetch at a time, however many calls wait on it."""
        with self._lock:
            if not self._token or self._clock() >= self._renew_at:
                token, lifetime = self._fetch()
                self._token = token
                self._renew_at = self._clock() + max(lifetime - _RENEW_BEFORE_SECONDS, lifetime / 2)
            return self._token

    def _fetch(self) -> tuple[str, float]:
        try:
            body = metadata(self.host, TOKEN_PATH)
        except OSError as exc:
            raise TokenUnavailable(f"metadata server unreachable: {exc}") from exc
        try:
            answer = json.loads(body)
            return str(answer["access_token"]), float(answer["expires_in"])
        except (ValueError, KeyError, TypeError) as exc:
            raise TokenUnavailable(f"metadata server's token answer is malformed: {exc}") from exc


class DefaultCredentialsToken:
    """Application Default Credentials' access token, through google-auth, renewed as needed."""

    def __init__(self) -> None:
        from google.auth.transport import requests as google_requests

        self._credentials, _project = _default_credentials()
        self._request = google_requests.Request()
        self._lock = threading.Lock()

    def token(self) -> str:
        """A token valid for a while yet, refreshed when google-auth says it no longer is."""
        import google.auth.exceptions

        with self._lock:
            if not self._credentials.valid:
                try:
                    self._credentials.refresh(self._request)
                except google.auth.exceptions.GoogleAuthError as exc:
                    raise TokenUnavailable(f"no token from the credentials: {exc}") from exc
            return self._credentials.token


def token_source(settings: Settings) -> TokenSource:
    """Where the function's tokens come from, by where it runs."""
    if settings.service:
        return MetadataToken(settings.metadata_host)
    return DefaultCredentialsToken()


def default_project(settings: Settings) -> str | None:
    """The project the function runs in, for when GOOGLE_CLOUD_PROJECT is unset."""
    if settings.service:
        return metadata(settings.metadata_host, PROJECT_PATH).decode()
    return _default_credentials()[1]


def metadata(host: str, path: str) -> bytes:
    """One value from the metadata server."""
    connection = http.client.HTTPConnection(host, timeout=_FETCH_TIMEOUT_SECONDS)
    try:
        connection.request("GET", path, headers={"Metadata-Flavor": "Google"})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise TokenUnavailable(f"metadata server answered {response.status} for {path}")
    return body


def _default_credentials() -> tuple[object, str | None]:
    import google.auth

    return google.auth.default(scopes=SCOPES)
