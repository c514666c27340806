"""Who the function is to Google: a bearer token on every Datastore call.

On Cloud Functions (and Cloud Run) the token is the function's service account's, from the
metadata server, fetched with the standard library and kept until shortly before it expires:
google-auth would import requests and cryptography first, tens of milliseconds of every cold
start. Anywhere else (an owner's machine, CI with a key) Application Default Credentials
decide, through google-auth, where start-up time does not matter.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable

import grpc

from counter.config import Settings

TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
PROJECT_PATH = "/computeMetadata/v1/project/project-id"
SCOPES = ("https://www.googleapis.com/auth/datastore",)
_FETCH_TIMEOUT_SECONDS = 3.0
_RENEW_BEFORE_SECONDS = 300
"""A token is renewed this long before it expires, as google-auth does."""


class TokenUnavailable(Exception):
    """The metadata server did not give what was asked."""


class MetadataToken(grpc.AuthMetadataPlugin):
    """The service account's access token from the metadata server, shared by every call."""

    def __init__(self, host: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self._clock = clock
        self._lock = threading.Lock()
        self._token = ""
        self._renew_at = 0.0

    def __call__(
        self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback
    ) -> None:
        """Give gRPC the authorization header, or the error that fails the call."""
        try:
            token = self.token()
        except (OSError, TokenUnavailable) as exc:
            callback((), exc)
            return
        callback((("authorization", f"Bearer {token}"),), None)

    def token(self) -> str:
        """A token valid for a while yet; one fetch at a time, however many calls wait on it."""
        with self._lock:
            if not self._token or self._clock() >= self._renew_at:
                token, lifetime = self._fetch()
                self._token = token
                self._renew_at = self._clock() + max(lifetime - _RENEW_BEFORE_SECONDS, lifetime / 2)
            return self._token

    def _fetch(self) -> tuple[str, float]:
        body = metadata(self.host, TOKEN_PATH)
        try:
            answer = json.loads(body)
            return str(answer["access_token"]), float(answer["expires_in"])
        except (ValueError, KeyError, TypeError) as exc:
            raise TokenUnavailable(f"metadata server's token answer is malformed: {exc}") from exc


def call_credentials(settings: Settings) -> grpc.CallCredentials:
    """The bearer token every Datastore call carries, from where the function runs."""
    if settings.service:
        return grpc.metadata_call_credentials(MetadataToken(settings.metadata_host))
    from google.auth.transport import grpc as google_grpc
    from google.auth.transport import requests as google_requests

    credentials, _project = _default_credentials()
    plugin = google_grpc.AuthMetadataPlugin(credentials, google_requests.Request())
    return grpc.metadata_call_credentials(plugin)


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
