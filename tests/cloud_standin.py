"""A recording stand-in of the Google Cloud APIs that deploy.sh's gcloud commands call.

The real gcloud talks to it instead of Google (tests/real_gcloud.py sets that up): every API's
endpoint is overridden with plain http on the API's own host
(`api_endpoint_overrides/run = http://run.googleapis.com/`) and the stand-in is gcloud's HTTP
proxy, so each request arrives here with the host Google would see. A request for anything else
(an https CONNECT, an API with no table here, a method a table lacks) is refused at once and
kept in `unanswered`, so a test fails naming it instead of waiting on a network that is not
there.

An API gcloud has no endpoint override for (billingbudgets, in TLS_ONLY) is reached over https
as usual: gcloud sends a CONNECT for its real host to the proxy, and given a TLS context (a
certificate for those hosts from a throwaway CA that gcloud is told to trust with
core/custom_ca_certs_file), the stand-in answers the CONNECT itself, ends TLS and serves the
requests inside the tunnel from the same tables.

It answers with the REST shapes of gcloud's own API clients (the SDK's
lib/googlecloudsdk/generated_clients/apis/API/VERSION/API_VERSION_client.py and
API_VERSION_messages.py): each route names the client's method id and its URL template, and
tests/test_cloud_standin.py checks every route against the installed SDK. It keeps state, so a
second deploy finds what the first created, and a long-running operation is done when it is
returned, so nothing waits.

Every request is recorded as a `Call`: method, host, path, query, JSON body, and for the upload
of the source the zip's file names.

Adding an API (billingbudgets for a budget, iam's workloadIdentityPools, cloudbilling...):
  1. Run the gcloud command against the stand-in. Its requests land in `unanswered`; the host
     names the API (`billingbudgets.googleapis.com` is `billingbudgets`).
  2. Look each one up in that API's generated client: `method_id`, `http_method` and
     `flat_path` (or `relative_path`); the request and answer shapes are in the messages
     module beside it.
  3. Add `"billingbudgets": [Route(...), ...]` to ROUTES, answering with the helpers here
     (`get_resource`, `create_in_collection`, `get_policy`, `set_policy`, `get_operation`) or
     a small function of your own that keeps what it creates with `StandIn.create`.
  4. Nothing else: tests/real_gcloud.py overrides the endpoint of every API in ROUTES (or, for
     one gcloud cannot override, lists it in TLS_ONLY and gets a certificate for it), and
     tests/test_cloud_standin.py checks the new routes against the SDK.
"""

from __future__ import annotations

import base64
import copy
import io
import itertools
import json
import re
import ssl
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

PROJECT_NUMBER = "123456789012"
ACCOUNT_DOMAIN = "iam.gserviceaccount.com"
# The account a new project's builds run as, and the one the function must never run as.
COMPUTE_ACCOUNT = f"{PROJECT_NUMBER}-compute@developer.gserviceaccount.com"
# What functions.runtimes.list offers; gcloud refuses a --runtime that is not listed.
RUNTIMES = ("python310", "python311", "python312", "python313")
# The signed URL that generateUploadUrl hands out is on Cloud Storage.
UPLOAD_HOST = "storage.googleapis.com"
OWNER = "user:owner@example.com"
# The service agents that enabling an API grants a role on the project, as Google does; gcloud
# checks Pub/Sub's before deploying a function on a topic.
PUBSUB_AGENT = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
SERVICE_AGENTS = {"pubsub.googleapis.com": (PUBSUB_AGENT, "roles/pubsub.serviceAgent")}
# APIs without an api_endpoint_overrides property in gcloud: reached by https through the proxy.
TLS_ONLY = frozenset({"billingbudgets"})
# The billing account a new project is linked to; its currency is not gcloud's default (USD).
BILLING_ACCOUNT = "billingAccounts/01A2B3-C4D5E6-F7A8B9"
BILLING_CURRENCY = "EUR"
# What a project's custom role may hold of Cloud Run's permissions on services.
RUN_SERVICE_PERMISSIONS = tuple(
    f"run.services.{verb}"
    for verb in ("create", "delete", "get", "getIamPolicy", "list", "setIamPolicy", "update")
)


@dataclass
class Call:
    """One request gcloud made, and the status it was answered with."""

    method: str
    host: str
    path: str
    query: dict[str, str]
    body: Any = None
    # For the upload of the source: the names in the zip, in archive order.
    files: list[str] | None = None
    params: dict[str, str] = field(default_factory=dict)
    method_id: str = ""
    status: int = 0

    @property
    def api(self) -> str:
        """The API the host names: `us-central1-run.googleapis.com` is `run`."""
        name = self.host.split(":")[0].removesuffix(".googleapis.com")
        return re.sub(r"^[a-z]+-[a-z]+\d+-", "", name)

    def __str__(self) -> str:
        return f"{self.method} {self.host}/{self.path}"


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: a status and a JSON body."""

    status: int
    body: dict


class ApiError(Exception):
    """An error as Google's APIs return it: {"error": {"code", "message", "status"}}."""

    def __init__(self, code: HTTPStatus, status: str, message: str) -> None:
        super().__init__(message)
        self.reply = Reply(code, {"error": {"code": code, "message": message, "status": status}})


def not_found(name: str) -> ApiError:
    """What the APIs answer for a resource that does not exist."""
    return ApiError(HTTPStatus.NOT_FOUND, "NOT_FOUND", f"Resource '{name}' was not found")


def already_exists(name: str) -> ApiError:
    """What the APIs answer to a create whose name is taken."""
    return ApiError(HTTPStatus.CONFLICT, "ALREADY_EXISTS", f"Resource '{name}' already exists")


Answer = Callable[["StandIn", Call], Reply]


@dataclass(frozen=True)
class Route:
    """A method of an API: its id and URL as the generated client names them, and an answer."""

    method_id: str  # e.g. "iam.projects.serviceAccounts.get"
    http_method: str
    flat_path: str  # e.g. "v1/projects/{projectsId}/serviceAccounts/{serviceAccountsId}"
    answer: Answer

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path's parameters if this route serves the request, else None."""
        if method != self.http_method:
            return None
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/:]+)", re.escape(self.flat_path))
        found = re.fullmatch(pattern, path)
        if not found:
            return None
        return {name: unquote(value) for name, value in found.groupdict().items()}


@dataclass
class StandIn:
    """One Google Cloud project as the APIs hold it, the server that answers for it, its record."""

    project: str
    # What the function reports as its URL once deployed, e.g. a live test server.
    function_url: str = "https://visits-standin-uc.a.run.app"
    # Method ids answered 403 PERMISSION_DENIED, e.g. "iam.projects.serviceAccounts.get".
    denied: set[str] = field(default_factory=set)
    # Ends TLS for the TLS_ONLY APIs' hosts; without it their CONNECTs are refused.
    tls: ssl.SSLContext | None = None
    calls: list[Call] = field(default_factory=list)
    unanswered: list[Call] = field(default_factory=list)
    # "api name" of everything created, in order (TTL policies included).
    created: list[str] = field(default_factory=list)
    # Per API, resource name -> the resource as the API returns it; IAM policies likewise.
    resources: dict[str, dict[str, dict]] = field(default_factory=dict)
    policies: dict[str, dict[str, dict]] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        self._seed()

    def _seed(self) -> None:
        """A new project: it exists, and its owner is the only one with a role."""
        project = f"projects/{self.project}"
        self.store(
            "cloudresourcemanager",
            project,
            {
                "projectId": self.project,
                "projectNumber": PROJECT_NUMBER,
                "name": self.project,
                "lifecycleState": "ACTIVE",
                "createTime": "2026-01-01T00:00:00.000Z",
            },
        )
        owner = {"role": "roles/owner", "members": [OWNER]}
        self.policies["cloudresourcemanager"] = {
            project: {"version": 1, "etag": "BwYAAAAAAAA=", "bindings": [owner]}
        }
        account = {
            "name": BILLING_ACCOUNT,
            "open": True,
            "displayName": "My Billing Account",
            "currencyCode": BILLING_CURRENCY,
        }
        self.store("cloudbilling", BILLING_ACCOUNT, account)
        self.link_billing(BILLING_ACCOUNT)

    def reset(self) -> None:
        """Back to a new project, nothing denied; the record of calls is kept."""
        with self._lock:
            for state in (self.resources, self.policies, self.created, self.denied):
                state.clear()
            self._seed()

    # --- the server ---

    def start(self) -> int:
        """Serve on a free loopback port from a thread; return the port."""
        standin = self

        class Handler(ProxyRequestHandler):
            tls = standin.tls

            def answer(self, call: Call) -> Reply:
                return standin.answer(call)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self._server.server_address[1]

    @property
    def port(self) -> int:
        """The loopback port it serves on, once started."""
        assert self._server, "not started"
        return self._server.server_address[1]

    def stop(self) -> None:
        """Stop serving."""
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def answer(self, call: Call) -> Reply:
        """Route a request to its API's table, answer it and record it."""
        with self._lock:
            reply = self._dispatch(call)
            call.status = reply.status
            self.calls.append(call)
            return reply

    def _dispatch(self, call: Call) -> Reply:
        if call.method == "PUT" and call.host == UPLOAD_HOST:
            return self._receive_upload(call)
        for route in ROUTES.get(call.api, []):
            params = route.match(call.method, call.path)
            if params is None:
                continue
            call.params, call.method_id = params, route.method_id
            try:
                if route.method_id in self.denied:
                    raise ApiError(
                        HTTPStatus.FORBIDDEN,
                        "PERMISSION_DENIED",
                        f"Permission denied for {route.method_id} on {call.path}",
                    )
                self._check_project(call.path)
                return route.answer(self, call)
            except ApiError as error:
                return error.reply
        self.unanswered.append(call)
        # 400, not 501: gcloud retries a 5xx five times before it gives up.
        message = f"the stand-in has no route for {call}"
        return ApiError(HTTPStatus.BAD_REQUEST, "FAILED_PRECONDITION", message).reply

    def _check_project(self, path: str) -> None:
        """Refuse any project but this one, as Google refuses a project you cannot see."""
        for project in re.findall(r"projects/([^/:]+)", path):
            if unquote(project) not in (self.project, PROJECT_NUMBER, "-"):
                raise ApiError(
                    HTTPStatus.FORBIDDEN,
                    "PERMISSION_DENIED",
                    f"Permission denied on resource project {project}.",
                )

    def _receive_upload(self, call: Call) -> Reply:
        """The signed URL of an upload: keep the archive's file list."""
        self.store("storage", call.path, {"files": call.files})
        return Reply(HTTPStatus.OK, {})

    # --- what the tests read and seed ---

    def resource(self, api: str, name: str) -> dict | None:
        """What an API holds under a name."""
        return self.resources.get(api, {}).get(name)

    def policy(self, api: str, name: str) -> dict:
        """The IAM policy an API holds for a resource; an empty one until it is set."""
        return self.policies.get(api, {}).get(name, {"version": 1, "etag": "ACAB"})

    def add_database(self, database_id: str, database_type: str) -> None:
        """A database made before deploy.sh runs."""
        name = f"projects/{self.project}/databases/{database_id}"
        database = {"name": name, "type": database_type, "locationId": "nam5", "uid": "1"}
        self.store("firestore", name, database)

    def link_billing(self, account: str | None) -> None:
        """Link the project to a billing account, or (None) leave it without billing."""
        info = {"name": f"projects/{self.project}/billingInfo", "projectId": self.project}
        if account:
            info.update(billingAccountName=account, billingEnabled=True)
        else:
            info.update(billingAccountName="", billingEnabled=False)
        self.store("cloudbilling", info["name"], info)

    def add_service_account(self, account_id: str) -> str:
        """A service account made before deploy.sh runs; its email."""
        email = f"{account_id}@{self.project}.{ACCOUNT_DOMAIN}"
        name = f"projects/{self.project}/serviceAccounts/{email}"
        self.store("iam", name, {"name": name, "email": email, "projectId": self.project})
        return email

    def add_role(self, role_id: str, permissions: list[str], *, deleted: bool = False) -> str:
        """A custom role of the project made before deploy.sh runs, or deleted since; its name."""
        name = f"projects/{self.project}/roles/{role_id}"
        role = {"name": name, "includedPermissions": permissions, "etag": "BwYAAAAAAAA="}
        if deleted:
            role["deleted"] = True
        self.store("iam", name, role)
        return name

    def members(self, api: str, name: str, role: str) -> list[str]:
        """Who has a role on a resource, by its IAM policy."""
        bindings = self.policy(api, name).get("bindings", [])
        return [
            member
            for binding in bindings
            if binding["role"] == role
            for member in binding["members"]
        ]

    def remove_member(self, api: str, name: str, role: str, member: str) -> None:
        """Take a member out of a role on a resource, as someone else (the guard) would."""
        policy = self.policies[api][name]
        for binding in policy["bindings"]:
            if binding["role"] == role and member in binding["members"]:
                binding["members"].remove(member)
        policy["bindings"] = [binding for binding in policy["bindings"] if binding["members"]]
        policy["etag"] = base64.b64encode(f"etag-{self.new_id()}".encode()).decode()

    # --- for the answers ---

    def new_id(self) -> str:
        """A fresh id for an operation or a resource."""
        return f"{next(self._ids):04d}"

    def store(self, api: str, name: str, resource: dict) -> dict:
        """Keep a resource under its name and return it."""
        self.resources.setdefault(api, {})[name] = resource
        return resource

    def create(self, api: str, name: str, resource: dict) -> dict:
        """Keep a new resource, or refuse a name that is taken, as every create does."""
        if self.resource(api, name) is not None:
            raise already_exists(name)
        self.created.append(f"{api} {name}")
        return self.store(api, name, resource)

    def done_operation(
        self, api: str, name: str, response: dict | None, metadata: dict | None = None
    ) -> dict:
        """A long-running operation, already done, kept for operations.get."""
        operation: dict[str, Any] = {"name": name, "done": True}
        if metadata:
            operation["metadata"] = metadata
        if response is not None:
            operation["response"] = response
        return self.store(api, name, operation)


def now() -> str:
    """The time in RFC 3339, as resources carry it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def type_url(message: str) -> str:
    """The @type of a message packed in an operation."""
    return f"type.googleapis.com/{message}"


def resource_name(call: Call) -> str:
    """The resource a path names: the path after the API's version."""
    return unquote(call.path.split("/", 1)[1])


# --- answers any API can use ---


def get_resource(standin: StandIn, call: Call) -> Reply:
    """A get: the resource the path names, or NOT_FOUND."""
    name = resource_name(call)
    resource = standin.resource(call.api, name)
    if resource is None:
        raise not_found(name)
    return Reply(HTTPStatus.OK, resource)


get_operation = get_resource  # operations are kept under their names like any resource


def policy_target(standin: StandIn, call: Call) -> str:
    """The resource before `:getIamPolicy`/`:setIamPolicy`; `projects/-` is this project."""
    name = resource_name(call).rsplit(":", 1)[0]
    return re.sub(r"^projects/-/", f"projects/{standin.project}/", name)


def get_policy(standin: StandIn, call: Call) -> Reply:
    """getIamPolicy of the resource before `:getIamPolicy`."""
    name = policy_target(standin, call)
    if standin.resource(call.api, name) is None:
        raise not_found(name)
    return Reply(HTTPStatus.OK, standin.policy(call.api, name))


def set_policy(standin: StandIn, call: Call) -> Reply:
    """setIamPolicy: refuse a stale etag (a read-modify-write race), keep it, give a new etag."""
    name = policy_target(standin, call)
    if standin.resource(call.api, name) is None:
        raise not_found(name)
    policy = copy.deepcopy(call.body["policy"])
    if policy.get("etag") not in (None, standin.policy(call.api, name)["etag"]):
        raise ApiError(
            HTTPStatus.CONFLICT,
            "ABORTED",
            "There were concurrent policy changes. Please retry the whole read-modify-write"
            " with exponential backoff.",
        )
    policy["etag"] = base64.b64encode(f"etag-{standin.new_id()}".encode()).decode()
    policy.setdefault("version", 1)
    standin.policies.setdefault(call.api, {})[name] = policy
    return Reply(HTTPStatus.OK, policy)


def create_in_collection(id_param: str, **output: str) -> Answer:
    """A create with the new id in the query, answered with a finished operation (API Gateway);
    output fields may use {id}."""

    def answer(standin: StandIn, call: Call) -> Reply:
        resource_id = call.query[id_param]
        name = f"{resource_name(call)}/{resource_id}"
        resource = {**call.body, "name": name, "createTime": now(), "state": "ACTIVE"}
        resource.update({key: value.format(id=resource_id) for key, value in output.items()})
        standin.create(call.api, name, resource)
        return location_operation(standin, call, resource, "create")

    return answer


def location_operation(standin: StandIn, call: Call, resource: dict, verb: str) -> Reply:
    """The finished operation of a change to a resource under projects/P/locations/L."""
    location = "/".join(resource["name"].split("/")[:4])
    version = call.path.split("/", 1)[0]
    package = {
        "cloudfunctions": "google.cloud.functions.v2",
        "apigateway": "google.cloud.apigateway.v1",
    }[call.api]
    metadata = {
        "@type": type_url(f"{package}.OperationMetadata"),
        "createTime": now(),
        "endTime": now(),
        "target": resource["name"],
        "verb": verb,
        "apiVersion": version,
    }
    if call.api == "cloudfunctions":
        # gcloud shows these as progress; an HTTP function has no trigger stage.
        metadata["stages"] = [
            {"name": stage, "state": "COMPLETE", "message": ""} for stage in ("BUILD", "SERVICE")
        ]
    kind = {"cloudfunctions": "Function", "apigateway": "Resource"}[call.api]
    response = {"@type": type_url(f"{package}.{kind}"), **resource}
    name = f"{location}/operations/operation-{standin.new_id()}"
    return Reply(HTTPStatus.OK, standin.done_operation(call.api, name, response, metadata))


def replace_fields(target: dict, source: dict, mask: str) -> None:
    """Apply a field mask: each field it names takes source's value, or goes if source lacks it."""
    for mask_path in mask.split(","):
        # gcloud writes masks in snake_case (build_config.entry_point); the JSON is camelCase.
        path = [
            re.sub(r"_([a-z])", lambda m: m.group(1).upper(), key) for key in mask_path.split(".")
        ]
        inner_source, inner_target = source, target
        for key in path[:-1]:
            inner_source = inner_source.get(key, {})
            inner_target = inner_target.setdefault(key, {})
        if path[-1] in inner_source:
            inner_target[path[-1]] = copy.deepcopy(inner_source[path[-1]])
        else:
            inner_target.pop(path[-1], None)


# --- oauth2: the token endpoint of the throwaway key ---


def issue_token(standin: StandIn, call: Call) -> Reply:
    """Trade a signed JWT for a token; gcloud asks for an ID token first, then an access token."""
    assertion = call.body.get("assertion", "")
    claims = json.loads(base64.urlsafe_b64decode(assertion.split(".")[1] + "=="))
    if "target_audience" in claims:
        return Reply(HTTPStatus.OK, {"id_token": assertion})
    token = {"access_token": "standin-token", "expires_in": 3600, "token_type": "Bearer"}
    return Reply(HTTPStatus.OK, token)


# --- serviceusage: enabling APIs ---


def service(service_id: str, state: str) -> dict:
    """A Service of serviceusage v1."""
    return {
        "name": f"projects/{PROJECT_NUMBER}/services/{service_id}",
        "parent": f"projects/{PROJECT_NUMBER}",
        "config": {"name": service_id},
        "state": state,
    }


def batch_enable(standin: StandIn, call: Call) -> Reply:
    """services.batchEnable: enable each API; the operation is done at once."""
    enabled = [
        standin.store(
            "serviceusage",
            f"projects/{PROJECT_NUMBER}/services/{service_id}",
            service(service_id, "ENABLED"),
        )
        for service_id in call.body["serviceIds"]
    ]
    for service_id in call.body["serviceIds"]:
        if service_id in SERVICE_AGENTS:
            grant_service_agent(standin, *SERVICE_AGENTS[service_id])
    response = {
        "@type": type_url("google.api.serviceusage.v1.BatchEnableServicesResponse"),
        "services": enabled,
    }
    name = f"operations/acat.p2-{PROJECT_NUMBER}-{standin.new_id()}"
    return Reply(HTTPStatus.OK, standin.done_operation("serviceusage", name, response))


def grant_service_agent(standin: StandIn, member: str, role: str) -> None:
    """What Google does as an API is enabled: its service agent gets its role on the project."""
    policy = standin.policies["cloudresourcemanager"][f"projects/{standin.project}"]
    binding = next((b for b in policy["bindings"] if b["role"] == role), None)
    if binding is None:
        policy["bindings"].append({"role": role, "members": [member]})
    elif member not in binding["members"]:
        binding["members"].append(member)


def get_service(standin: StandIn, call: Call) -> Reply:
    """services.get: an API never enabled here is DISABLED."""
    service_id = call.params["servicesId"]
    found = standin.resource("serviceusage", f"projects/{PROJECT_NUMBER}/services/{service_id}")
    return Reply(HTTPStatus.OK, found or service(service_id, "DISABLED"))


# --- firestore: the database and its TTL policies ---


def create_database(standin: StandIn, call: Call) -> Reply:
    """databases.create: the database as sent, plus what the service fills in."""
    name = f"{resource_name(call)}/{call.query['databaseId']}"
    database = {
        **call.body,
        "name": name,
        "uid": standin.new_id(),
        "createTime": now(),
        "concurrencyMode": "PESSIMISTIC",
        "appEngineIntegrationMode": "DISABLED",
        "etag": standin.new_id(),
    }
    standin.create("firestore", name, database)
    response = {"@type": type_url("google.firestore.admin.v1.Database"), **database}
    metadata = {"@type": type_url("google.firestore.admin.v1.CreateDatabaseMetadata")}
    operation = standin.done_operation(
        "firestore", f"{name}/operations/{standin.new_id()}", response, metadata
    )
    return Reply(HTTPStatus.OK, operation)


def database_of(standin: StandIn, call: Call) -> str:
    """The database a collection-group path is under; NOT_FOUND if there is none."""
    name = f"projects/{call.params['projectsId']}/databases/{call.params['databasesId']}"
    if standin.resource("firestore", name) is None:
        raise not_found(name)
    return name


def list_fields(standin: StandIn, call: Call) -> Reply:
    """fields.list; `ttls list` filters on ttlConfig:*, the one filter answered here."""
    if call.query.get("filter") != "ttlConfig:*":
        raise ApiError(HTTPStatus.BAD_REQUEST, "INVALID_ARGUMENT", "unsupported filter")
    groups = f"{database_of(standin, call)}/collectionGroups/"
    fields = [
        resource
        for name, resource in standin.resources["firestore"].items()
        if name.startswith(groups) and "/fields/" in name and "ttlConfig" in resource
    ]
    return Reply(HTTPStatus.OK, {"fields": fields} if fields else {})


def patch_field(standin: StandIn, call: Call) -> Reply:
    """fields.patch with updateMask=ttlConfig: a new TTL policy starts in state CREATING."""
    database = database_of(standin, call)
    if call.query.get("updateMask") != "ttlConfig":
        raise ApiError(HTTPStatus.BAD_REQUEST, "INVALID_ARGUMENT", "unsupported updateMask")
    name = resource_name(call)
    had_ttl = "ttlConfig" in (standin.resource("firestore", name) or {})
    field_ = {"name": name}
    if "ttlConfig" in call.body:
        field_["ttlConfig"] = {**call.body["ttlConfig"], "state": "CREATING"}
        if not had_ttl:
            standin.created.append(f"firestore {name} ttlConfig")
    standin.store("firestore", name, field_)
    metadata = {
        "@type": type_url("google.firestore.admin.v1.FieldOperationMetadata"),
        "field": name,
        "state": "PROCESSING",
    }
    operation = standin.done_operation(
        "firestore", f"{database}/operations/{standin.new_id()}", None, metadata
    )
    return Reply(HTTPStatus.OK, operation)


# --- iam: service accounts ---


def get_service_account(standin: StandIn, call: Call) -> Reply:
    """serviceAccounts.get, by email under projects/-."""
    email = call.params["serviceAccountsId"]
    found = standin.resource("iam", f"projects/{standin.project}/serviceAccounts/{email}")
    if found is None:
        raise ApiError(HTTPStatus.NOT_FOUND, "NOT_FOUND", f"Unknown service account: {email}")
    return Reply(HTTPStatus.OK, found)


def create_service_account(standin: StandIn, call: Call) -> Reply:
    """serviceAccounts.create: the account id and display fields become an account."""
    project = call.params["projectsId"]
    email = f"{call.body['accountId']}@{project}.{ACCOUNT_DOMAIN}"
    name = f"projects/{project}/serviceAccounts/{email}"
    account = {
        **call.body.get("serviceAccount", {}),
        "name": name,
        "projectId": project,
        "uniqueId": f"1{standin.new_id():0>20}",
        "email": email,
        "etag": "MDEwMjE5MjA=",
        "oauth2ClientId": "1",
    }
    return Reply(HTTPStatus.OK, standin.create("iam", name, account))


# --- iam: workload identity pools and their providers ---


def pool_name(standin: StandIn, call: Call) -> str:
    """The pool or provider a path names, as Google names it: by the project's number."""
    name = resource_name(call).rsplit(":", 1)[0]
    return re.sub(r"^projects/[^/]+/", f"projects/{PROJECT_NUMBER}/", name)


def get_pool(standin: StandIn, call: Call) -> Reply:
    """workloadIdentityPools.get and providers.get: a deleted one is still there, DELETED."""
    name = pool_name(standin, call)
    found = standin.resource("iam", name)
    if found is None:
        raise not_found(name)
    return Reply(HTTPStatus.OK, found)


def create_pool(id_param: str) -> Answer:
    """workloadIdentityPools.create and providers.create: the new one ACTIVE, in a done
    operation under it; a provider needs its pool."""

    def answer(standin: StandIn, call: Call) -> Reply:
        parent = pool_name(standin, call).rsplit("/", 1)[0]
        if "/workloadIdentityPools/" in parent and standin.resource("iam", parent) is None:
            raise not_found(parent)
        name = f"{pool_name(standin, call)}/{call.query[id_param]}"
        resource = {**call.body, "name": name, "state": "ACTIVE"}
        standin.create("iam", name, resource)
        return Reply(HTTPStatus.OK, pool_operation(standin, name, resource))

    return answer


def undelete_pool(standin: StandIn, call: Call) -> Reply:
    """workloadIdentityPools.undelete and providers.undelete: DELETED becomes ACTIVE."""
    name = pool_name(standin, call)
    found = standin.resource("iam", name)
    if found is None:
        raise not_found(name)
    if found.get("state") != "DELETED":
        raise ApiError(HTTPStatus.BAD_REQUEST, "FAILED_PRECONDITION", f"{name} is not deleted")
    found["state"] = "ACTIVE"
    return Reply(HTTPStatus.OK, pool_operation(standin, name, found))


def pool_operation(standin: StandIn, name: str, resource: dict) -> dict:
    """The finished operation of a change to a pool or provider, kept under it."""
    kind = "WorkloadIdentityPoolProvider" if "/providers/" in name else "WorkloadIdentityPool"
    response = {"@type": type_url(f"google.iam.v1.{kind}"), **resource}
    return standin.done_operation("iam", f"{name}/operations/{standin.new_id()}", response)


# --- cloudbuild: the account builds run as ---


def default_build_account(standin: StandIn, call: Call) -> Reply:
    """locations.getDefaultServiceAccount: a new project builds as the Compute Engine account."""
    project = call.params["projectsId"]
    return Reply(
        HTTPStatus.OK,
        {
            "name": resource_name(call),
            "serviceAccountEmail": f"projects/{project}/serviceAccounts/{COMPUTE_ACCOUNT}",
        },
    )


# --- cloudfunctions (2nd gen) ---


def list_runtimes(standin: StandIn, call: Call) -> Reply:
    """runtimes.list: the Python runtimes of 2nd gen."""
    runtimes = [
        {"name": name, "displayName": name, "stage": "GA", "environment": "GEN_2"}
        for name in RUNTIMES
    ]
    return Reply(HTTPStatus.OK, {"runtimes": runtimes})


def generate_upload_url(standin: StandIn, call: Call) -> Reply:
    """functions.generateUploadUrl: a signed URL on Cloud Storage (plain http, via the proxy)."""
    location = call.params["locationsId"]
    bucket = f"gcf-v2-uploads-{PROJECT_NUMBER}.{location}.cloudfunctions.appspot.com"
    obj = f"{standin.new_id()}.zip"
    return Reply(
        HTTPStatus.OK,
        {
            "uploadUrl": f"http://{UPLOAD_HOST}/{bucket}/{obj}?GoogleAccessId=gcf&Signature=s",
            "storageSource": {"bucket": bucket, "object": obj},
        },
    )


def create_function(standin: StandIn, call: Call) -> Reply:
    """functions.create: the function as sent, plus what the platform fills in."""
    name = f"{resource_name(call)}/{call.query['functionId']}"
    function = standin.create("cloudfunctions", name, deployed_function(standin, name, call.body))
    return location_operation(standin, call, function, "create")


def patch_function(standin: StandIn, call: Call) -> Reply:
    """functions.patch: the fields in updateMask take the values sent; a new revision."""
    name = resource_name(call)
    current = standin.resource("cloudfunctions", name)
    if current is None:
        raise not_found(name)
    updated = copy.deepcopy(current)
    replace_fields(updated, call.body, call.query.get("updateMask") or ",".join(call.body))
    function = standin.store("cloudfunctions", name, deployed_function(standin, name, updated))
    return location_operation(standin, call, function, "update")


def deployed_function(standin: StandIn, name: str, sent: dict) -> dict:
    """A function as the API reports it once deployed; its Cloud Run service comes with it."""
    function = copy.deepcopy(sent)
    project, location, function_id = name.split("/")[1::2]
    function.update(
        name=name,
        environment="GEN_2",
        state="ACTIVE",
        updateTime=now(),
        url=f"https://{location}-{project}.cloudfunctions.net/{function_id}",
    )
    function.setdefault("buildConfig", {})["build"] = (
        f"projects/{PROJECT_NUMBER}/locations/{location}/builds/{standin.new_id()}"
    )
    service_name = f"projects/{project}/locations/{location}/services/{function_id}"
    standin.store("run", service_name, {"metadata": {"name": function_id}})
    if "eventTrigger" in function:
        # An event function: Cloud Functions makes the Eventarc trigger that pushes to it.
        function["eventTrigger"].setdefault(
            "trigger", f"projects/{project}/locations/{location}/triggers/{function_id}-000001"
        )
    function.setdefault("serviceConfig", {}).update(
        service=service_name,
        uri=standin.function_url,
        revision=f"{function_id}-{standin.new_id()}",
        allTrafficOnLatestRevision=True,
    )
    return function


# --- apigateway ---


def patch_gateway(standin: StandIn, call: Call) -> Reply:
    """gateways.patch: the fields in updateMask take the values sent."""
    name = resource_name(call)
    current = standin.resource("apigateway", name)
    if current is None:
        raise not_found(name)
    updated = {**copy.deepcopy(current), "updateTime": now()}
    replace_fields(updated, call.body, call.query["updateMask"])
    standin.store("apigateway", name, updated)
    return location_operation(standin, call, updated, "update")


# --- cloudbilling and billingbudgets: the project's billing account and its budgets ---


def billing_account_of(standin: StandIn, call: Call) -> dict:
    """The billing account a budget path is under; one the caller cannot see is refused."""
    name = f"billingAccounts/{call.params['billingAccountsId']}"
    found = standin.resource("cloudbilling", name)
    if found is None:
        raise ApiError(HTTPStatus.FORBIDDEN, "PERMISSION_DENIED", f"Permission denied on {name}")
    return found


def list_budgets(standin: StandIn, call: Call) -> Reply:
    """budgets.list: every budget of the account (gcloud filters by display name itself)."""
    prefix = f"{billing_account_of(standin, call)['name']}/budgets/"
    budgets = [
        budget
        for name, budget in standin.resources.get("billingbudgets", {}).items()
        if name.startswith(prefix)
    ]
    return Reply(HTTPStatus.OK, {"budgets": budgets} if budgets else {})


def create_budget(standin: StandIn, call: Call) -> Reply:
    """budgets.create: refuse a currency other than the account's, as Google does."""
    account = billing_account_of(standin, call)
    currency = call.body.get("amount", {}).get("specifiedAmount", {}).get("currencyCode")
    if currency not in (None, account["currencyCode"]):
        raise ApiError(
            HTTPStatus.BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Budget currency code must match the currency code of the billing account.",
        )
    check_notifications_rule(standin, call.body)
    name = f"{account['name']}/budgets/{standin.new_id()}"
    budget = {**call.body, "name": name, "etag": standin.new_id()}
    return Reply(HTTPStatus.OK, standin.create("billingbudgets", name, budget))


def get_budget(standin: StandIn, call: Call) -> Reply:
    """budgets.get, which `budgets update` reads first; under an account the caller can see."""
    billing_account_of(standin, call)
    return get_resource(standin, call)


def patch_budget(standin: StandIn, call: Call) -> Reply:
    """budgets.patch: the fields in updateMask take the values sent, the rest stay."""
    billing_account_of(standin, call)
    name = resource_name(call)
    current = standin.resource("billingbudgets", name)
    if current is None:
        raise not_found(name)
    updated = {**copy.deepcopy(current), "etag": standin.new_id()}
    replace_fields(updated, call.body, call.query["updateMask"])
    rule = updated.get("notificationsRule", {})
    if rule.get("pubsubTopic"):
        # `budgets update --notifications-rule-pubsub-topic` sends schemaVersion 1.0 but masks
        # only the topic; taken here as the API's default, the one schema there is (an
        # assumption: Google does not document this case).
        rule.setdefault("schemaVersion", "1.0")
    check_notifications_rule(standin, updated)
    return Reply(HTTPStatus.OK, standin.store("billingbudgets", name, updated))


def check_notifications_rule(standin: StandIn, budget: dict) -> None:
    """A budget's Pub/Sub topic must exist before the budget names it, and its notifications'
    schema be given, "1.0" the only one (the API's NotificationsRule)."""
    rule = budget.get("notificationsRule", {})
    topic = rule.get("pubsubTopic")
    if not topic:
        return
    if rule.get("schemaVersion") != "1.0":
        raise ApiError(
            HTTPStatus.BAD_REQUEST, "INVALID_ARGUMENT", "schemaVersion must be 1.0 with a topic"
        )
    if standin.resource("pubsub", topic) is None:
        raise ApiError(HTTPStatus.BAD_REQUEST, "INVALID_ARGUMENT", f"Topic {topic} does not exist")


# --- pubsub: the topic a budget publishes its notifications to ---


def create_topic(standin: StandIn, call: Call) -> Reply:
    """topics.create, a PUT of the topic's own name: a name that is taken is ALREADY_EXISTS."""
    name = resource_name(call)
    return Reply(HTTPStatus.OK, standin.create("pubsub", name, {**(call.body or {}), "name": name}))


# --- iam: the guard's custom role ---


def create_role(standin: StandIn, call: Call) -> Reply:
    """roles.create: the role as sent under projects/P/roles/ID. The id of a deleted role stays
    taken (until Google purges it), so creating it again is ALREADY_EXISTS."""
    name = f"{resource_name(call)}/{call.body['roleId']}"
    role = {**call.body.get("role", {}), "name": name, "etag": "BwYAAAAAAAA="}
    return Reply(HTTPStatus.OK, standin.create("iam", name, role))


def testable_permissions(standin: StandIn, call: Call) -> Reply:
    """permissions.queryTestablePermissions, which `roles create` checks a role's permissions
    against: the Cloud Run service permissions, each one a custom role may hold."""
    project = f"//cloudresourcemanager.googleapis.com/projects/{standin.project}"
    if call.body.get("fullResourceName") != project:
        raise ApiError(HTTPStatus.BAD_REQUEST, "INVALID_ARGUMENT", "unsupported resource")
    permissions = [
        {"name": name, "stage": "GA", "customRolesSupportLevel": "SUPPORTED"}
        for name in RUN_SERVICE_PERMISSIONS
    ]
    return Reply(HTTPStatus.OK, {"permissions": permissions})


def patch_role(standin: StandIn, call: Call) -> Reply:
    """roles.patch: the fields in updateMask take the values sent."""
    name = resource_name(call)
    current = standin.resource("iam", name)
    if current is None:
        raise not_found(name)
    updated = copy.deepcopy(current)
    replace_fields(updated, call.body, call.query.get("updateMask") or ",".join(call.body))
    return Reply(HTTPStatus.OK, standin.store("iam", name, updated))


def undelete_role(standin: StandIn, call: Call) -> Reply:
    """roles.undelete: a deleted role is back, with the permissions it had."""
    name = resource_name(call).rsplit(":", 1)[0]
    found = standin.resource("iam", name)
    if found is None:
        raise not_found(name)
    if not found.get("deleted"):
        raise ApiError(HTTPStatus.BAD_REQUEST, "FAILED_PRECONDITION", f"{name} is not deleted")
    found.pop("deleted")
    return Reply(HTTPStatus.OK, found)


LOCATION = "projects/{projectsId}/locations/{locationsId}"
FUNCTION = f"{LOCATION}/functions/{{functionsId}}"
DATABASE = "projects/{projectsId}/databases/{databasesId}"
FIELD = f"{DATABASE}/collectionGroups/{{collectionGroupsId}}/fields"
ACCOUNT = "projects/{projectsId}/serviceAccounts/{serviceAccountsId}"
POOL = f"{LOCATION}/workloadIdentityPools/{{workloadIdentityPoolsId}}"
PROVIDER = f"{POOL}/providers/{{providersId}}"
ROLE = "projects/{projectsId}/roles/{rolesId}"
TOPIC = "projects/{projectsId}/topics/{topicsId}"

ROUTES: dict[str, list[Route]] = {
    "oauth2": [Route("oauth2.token", "POST", "token", issue_token)],
    "serviceusage": [
        Route(
            "serviceusage.services.batchEnable",
            "POST",
            "v1/{v1Id}/{v1Id1}/services:batchEnable",
            batch_enable,
        ),
        Route(
            "serviceusage.services.get",
            "GET",
            "v1/{v1Id}/{v1Id1}/services/{servicesId}",
            get_service,
        ),
        Route("serviceusage.operations.get", "GET", "v1/operations/{operationsId}", get_operation),
    ],
    "cloudresourcemanager": [
        Route("cloudresourcemanager.projects.get", "GET", "v1/projects/{projectId}", get_resource),
        Route(
            "cloudresourcemanager.projects.getIamPolicy",
            "POST",
            "v1/projects/{resource}:getIamPolicy",
            get_policy,
        ),
        Route(
            "cloudresourcemanager.projects.setIamPolicy",
            "POST",
            "v1/projects/{resource}:setIamPolicy",
            set_policy,
        ),
    ],
    "firestore": [
        Route("firestore.projects.databases.get", "GET", f"v1/{DATABASE}", get_resource),
        Route(
            "firestore.projects.databases.create",
            "POST",
            "v1/projects/{projectsId}/databases",
            create_database,
        ),
        Route(
            "firestore.projects.databases.collectionGroups.fields.list",
            "GET",
            f"v1/{FIELD}",
            list_fields,
        ),
        Route(
            "firestore.projects.databases.collectionGroups.fields.patch",
            "PATCH",
            f"v1/{FIELD}/{{fieldsId}}",
            patch_field,
        ),
        Route(
            "firestore.projects.databases.operations.get",
            "GET",
            f"v1/{DATABASE}/operations/{{operationsId}}",
            get_operation,
        ),
    ],
    "iam": [
        Route(
            "iam.projects.serviceAccounts.get",
            "GET",
            "v1/projects/{projectsId}/serviceAccounts/{serviceAccountsId}",
            get_service_account,
        ),
        Route(
            "iam.projects.serviceAccounts.create",
            "POST",
            "v1/projects/{projectsId}/serviceAccounts",
            create_service_account,
        ),
        Route(
            "iam.projects.serviceAccounts.getIamPolicy",
            "POST",
            f"v1/{ACCOUNT}:getIamPolicy",
            get_policy,
        ),
        Route(
            "iam.projects.serviceAccounts.setIamPolicy",
            "POST",
            f"v1/{ACCOUNT}:setIamPolicy",
            set_policy,
        ),
        Route("iam.projects.locations.workloadIdentityPools.get", "GET", f"v1/{POOL}", get_pool),
        Route(
            "iam.projects.locations.workloadIdentityPools.create",
            "POST",
            f"v1/{LOCATION}/workloadIdentityPools",
            create_pool("workloadIdentityPoolId"),
        ),
        Route(
            "iam.projects.locations.workloadIdentityPools.undelete",
            "POST",
            f"v1/{POOL}:undelete",
            undelete_pool,
        ),
        Route(
            "iam.projects.locations.workloadIdentityPools.operations.get",
            "GET",
            f"v1/{POOL}/operations/{{operationsId}}",
            get_operation,
        ),
        Route(
            "iam.projects.locations.workloadIdentityPools.providers.get",
            "GET",
            f"v1/{PROVIDER}",
            get_pool,
        ),
        Route(
            "iam.projects.locations.workloadIdentityPools.providers.create",
            "POST",
            f"v1/{POOL}/providers",
            create_pool("workloadIdentityPoolProviderId"),
        ),
        Route(
            "iam.projects.locations.workloadIdentityPools.providers.undelete",
            "POST",
            f"v1/{PROVIDER}:undelete",
            undelete_pool,
        ),
        Route(
            "iam.projects.locations.workloadIdentityPools.providers.operations.get",
            "GET",
            f"v1/{PROVIDER}/operations/{{operationsId}}",
            get_operation,
        ),
        Route(
            "iam.permissions.queryTestablePermissions",
            "POST",
            "v1/permissions:queryTestablePermissions",
            testable_permissions,
        ),
        Route("iam.projects.roles.get", "GET", f"v1/{ROLE}", get_resource),
        Route("iam.projects.roles.create", "POST", "v1/projects/{projectsId}/roles", create_role),
        Route("iam.projects.roles.patch", "PATCH", f"v1/{ROLE}", patch_role),
        Route("iam.projects.roles.undelete", "POST", f"v1/{ROLE}:undelete", undelete_role),
    ],
    "cloudbuild": [
        Route(
            "cloudbuild.projects.locations.getDefaultServiceAccount",
            "GET",
            f"v1/{LOCATION}/defaultServiceAccount",
            default_build_account,
        ),
    ],
    "cloudfunctions": [
        Route(
            "cloudfunctions.projects.locations.functions.get", "GET", f"v2/{FUNCTION}", get_resource
        ),
        Route(
            "cloudfunctions.projects.locations.runtimes.list",
            "GET",
            f"v2/{LOCATION}/runtimes",
            list_runtimes,
        ),
        Route(
            "cloudfunctions.projects.locations.functions.generateUploadUrl",
            "POST",
            f"v2/{LOCATION}/functions:generateUploadUrl",
            generate_upload_url,
        ),
        Route(
            "cloudfunctions.projects.locations.functions.create",
            "POST",
            f"v2/{LOCATION}/functions",
            create_function,
        ),
        Route(
            "cloudfunctions.projects.locations.functions.patch",
            "PATCH",
            f"v2/{FUNCTION}",
            patch_function,
        ),
        Route(
            "cloudfunctions.projects.locations.operations.get",
            "GET",
            f"v2/{LOCATION}/operations/{{operationsId}}",
            get_operation,
        ),
    ],
    "cloudbilling": [
        Route(
            "cloudbilling.projects.getBillingInfo",
            "GET",
            "v1/projects/{projectsId}/billingInfo",
            get_resource,
        ),
        Route(
            "cloudbilling.billingAccounts.get",
            "GET",
            "v1/billingAccounts/{billingAccountsId}",
            get_resource,
        ),
    ],
    "billingbudgets": [
        Route(
            "billingbudgets.billingAccounts.budgets.list",
            "GET",
            "v1/billingAccounts/{billingAccountsId}/budgets",
            list_budgets,
        ),
        Route(
            "billingbudgets.billingAccounts.budgets.create",
            "POST",
            "v1/billingAccounts/{billingAccountsId}/budgets",
            create_budget,
        ),
        Route(
            "billingbudgets.billingAccounts.budgets.get",
            "GET",
            "v1/billingAccounts/{billingAccountsId}/budgets/{budgetsId}",
            get_budget,
        ),
        Route(
            "billingbudgets.billingAccounts.budgets.patch",
            "PATCH",
            "v1/billingAccounts/{billingAccountsId}/budgets/{budgetsId}",
            patch_budget,
        ),
    ],
    "pubsub": [
        Route("pubsub.projects.topics.get", "GET", f"v1/{TOPIC}", get_resource),
        Route("pubsub.projects.topics.create", "PUT", f"v1/{TOPIC}", create_topic),
    ],
    # A 2nd gen function is served by a Cloud Run service; its invoker policy lives there.
    "run": [
        Route(
            "run.projects.locations.services.getIamPolicy",
            "GET",
            f"v1/{LOCATION}/services/{{servicesId}}:getIamPolicy",
            get_policy,
        ),
        Route(
            "run.projects.locations.services.setIamPolicy",
            "POST",
            f"v1/{LOCATION}/services/{{servicesId}}:setIamPolicy",
            set_policy,
        ),
    ],
    "apigateway": [
        Route(
            "apigateway.projects.locations.apis.get",
            "GET",
            f"v1/{LOCATION}/apis/{{apisId}}",
            get_resource,
        ),
        Route(
            "apigateway.projects.locations.apis.create",
            "POST",
            f"v1/{LOCATION}/apis",
            create_in_collection("apiId"),
        ),
        Route(
            "apigateway.projects.locations.apis.configs.get",
            "GET",
            f"v1/{LOCATION}/apis/{{apisId}}/configs/{{configsId}}",
            get_resource,
        ),
        Route(
            "apigateway.projects.locations.apis.configs.create",
            "POST",
            f"v1/{LOCATION}/apis/{{apisId}}/configs",
            create_in_collection("apiConfigId"),
        ),
        Route(
            "apigateway.projects.locations.gateways.get",
            "GET",
            f"v1/{LOCATION}/gateways/{{gatewaysId}}",
            get_resource,
        ),
        Route(
            "apigateway.projects.locations.gateways.create",
            "POST",
            f"v1/{LOCATION}/gateways",
            create_in_collection("gatewayId", defaultHostname="{id}-standin.uc.gateway.dev"),
        ),
        Route(
            "apigateway.projects.locations.gateways.patch",
            "PATCH",
            f"v1/{LOCATION}/gateways/{{gatewaysId}}",
            patch_gateway,
        ),
        Route(
            "apigateway.projects.locations.operations.get",
            "GET",
            f"v1/{LOCATION}/operations/{{operationsId}}",
            get_operation,
        ),
    ],
}


class ProxyRequestHandler(BaseHTTPRequestHandler):
    """Reads gcloud's proxied requests (absolute URLs) and writes the stand-in's JSON answers."""

    protocol_version = "HTTP/1.1"
    tls: ssl.SSLContext | None = None  # set by StandIn.start

    def answer(self, call: Call) -> Reply:
        """The stand-in's answer; set by StandIn.start."""
        raise NotImplementedError

    def do_CONNECT(self) -> None:
        """A tunnel for https: for a TLS_ONLY API's host, end TLS here and serve the requests
        inside it; anything else is headed for the real Google, so refuse it (and record it)."""
        connect = Call("CONNECT", self.path, "", {})
        if self.tls is None or connect.api not in TLS_ONLY or not self.path.endswith(":443"):
            self._send(self.answer(connect), close=True)
            return
        self.send_response(HTTPStatus.OK, "Connection established")
        self.end_headers()
        self.wfile.flush()
        # The next requests on this connection come through the tunnel, over TLS.
        try:
            self.connection = self.tls.wrap_socket(self.connection, server_side=True)
        except ssl.SSLError:  # a client that does not trust the stand-in's CA hangs up
            self.close_connection = True
            return
        self.rfile = self.connection.makefile("rb")
        self.wfile = self.connection.makefile("wb")
        self.close_connection = False  # even after an HTTP/1.0 CONNECT, as http.client sends

    def _handle(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        query = {name: values[-1] for name, values in parse_qs(url.query).items()}
        query.pop("alt", None)  # alt=json: every answer is JSON
        call = Call(self.command, url.netloc or self.headers["Host"], url.path.lstrip("/"), query)
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("application/zip"):
            call.files = zipfile.ZipFile(io.BytesIO(raw)).namelist()
        elif content_type.startswith("application/x-www-form-urlencoded"):
            call.body = {name: values[-1] for name, values in parse_qs(raw.decode()).items()}
        elif raw:
            call.body = json.loads(raw)
        self._send(self.answer(call))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815 (http.server's names)

    def _send(self, reply: Reply, *, close: bool = False) -> None:
        data = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the record of calls is the log."""
