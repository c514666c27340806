"""openapi.yaml is a valid OpenAPI 2.0 contract, and the function keeps it."""

from __future__ import annotations

import re
import typing
from urllib.parse import urljoin

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from openapi_spec_validator import OpenAPIV2SpecValidator, validate
from schemathesis import CheckFunction
from schemathesis.specs.openapi.checks import content_type_conformance, negative_data_rejection

from conftest import ROOT
from counter import badge, days, pages
from counter.page_counts import NotCounted

SPEC_PATH = ROOT / "openapi.yaml"
SPEC = yaml.safe_load(SPEC_PATH.read_text())

schema = schemathesis.openapi.from_path(SPEC_PATH)


def test_contract_is_valid_openapi_2() -> None:
    validate(SPEC, cls=OpenAPIV2SpecValidator)


@pytest.mark.parametrize("path", SPEC["paths"])
def test_contract_has_exactly_the_methods_the_function_allows(live_server: str, path: str) -> None:
    # The function names its methods in Allow, on OPTIONS (/) or on the 405 that refuses it.
    allow = requests.options(urljoin(live_server, path), timeout=10).headers["Allow"]

    assert set(SPEC["paths"][path]) == {method.strip().lower() for method in allow.split(",")}


def test_backend_address_is_the_placeholder_deploy_fills_in() -> None:
    assert SPEC["x-google-backend"]["address"] == "FUNCTION_URL_PLACEHOLDER"
    assert "FUNCTION_URL_PLACEHOLDER" in (ROOT / "deploy.sh").read_text()


def accepts(parameter: dict, value: str) -> bool:
    """Whether the contract allows this value for a string parameter."""
    pattern = parameter.get("pattern", "")
    short_enough = len(value) <= parameter.get("maxLength", len(value))
    return short_enough and re.search(pattern, value) is not None


@pytest.mark.parametrize(
    "page",
    [
        "/",
        "/blog/2024/hello-world",
        "/caf\u00e9",
        "/" + "x" * 255,
        "/" + "x" * 256,
        "",
        "blog",
        "/a?b=1",
        "/a#top",
        "/a\nb",
        "/a\x7fb",
        "/a\x85b",
        "/a\u2028b",
        "/a\u2029b",
        "/blog/../x",
        "/blog/./x",
        "/blog/%2e%2E/x",
        "/blog/%252e/x",
        "/blog/..",
        "/blog/.../x",
        "/.well-known",
        "//a",
        "/a//b",
        "/a/",
    ],
)
def test_page_rule_in_the_contract_matches_the_function(page: str) -> None:
    assert accepts(SPEC["parameters"]["page"], page) == (pages.problem(page) is None)


@pytest.mark.parametrize(
    ("name", "value", "in_contract"),
    [
        ("label", "", True),
        ("label", "visits", True),
        ("label", "Caf\u00e9 \u0161\u0165astn\u00fd", True),
        ("label", "x" * 40, True),
        ("label", "x" * 41, False),
        ("label", "tab\there", False),
        ("label", "zero\u200bwidth", False),
        ("label", "\u00a0", False),
        ("color", "", True),
        ("color", "4c1", True),
        ("color", "#007EC6", True),
        ("color", "lightgrey", True),
        ("color", "4c", False),
        ("color", "purple", False),
        ("color", "red;x", False),
    ],
)
def test_badge_values_the_contract_allows_can_be_drawn(
    name: str, value: str, in_contract: bool
) -> None:
    # The contract may promise less than the function draws (any printable label), never more.
    assert accepts(SPEC["parameters"][name], value) == in_contract
    if in_contract:
        {"label": badge.label, "color": badge.color}[name](value)


def test_days_range_in_the_contract_is_the_functions() -> None:
    parameter = SPEC["parameters"]["days"]
    assert (parameter["minimum"], parameter["maximum"]) == (1, days.MAX_DAYS)
    for value in (1, days.MAX_DAYS):
        assert days.parse_count(str(value)) == value
    for value in (0, days.MAX_DAYS + 1):
        with pytest.raises(ValueError, match="days must be"):
            days.parse_count(str(value))


@pytest.mark.parametrize("answer", ["Visit", "Count"])
def test_the_reasons_in_the_contract_are_the_functions(answer: str) -> None:
    reason = SPEC["definitions"][answer]["properties"]["reason"]
    assert reason["enum"] == list(typing.get_args(NotCounted))


def test_every_error_body_has_the_error_shape() -> None:
    operations = [
        (f"{method} {path}", operation)
        for path, methods in SPEC["paths"].items()
        for method, operation in methods.items()
        if method != "head"  # HEAD answers carry no body
    ]
    assert operations
    for name, operation in operations:
        errors = {s: r for s, r in operation["responses"].items() if int(s) >= 400}
        assert errors, f"{name} documents no error answer"
        for status, response in errors.items():
            if "$ref" in response:
                response = SPEC["responses"][response["$ref"].rsplit("/", 1)[1]]
            assert response["schema"] == {"$ref": "#/definitions/Error"}, f"{name} {status}"


def checks_to_skip(case: schemathesis.Case) -> list[CheckFunction]:
    """Built-in checks that do not apply to this case, each for a stated reason."""
    skipped = []
    if case.path == "/badge.svg":
        # The contract promises a portable subset of labels and colours; the function draws
        # more (any printable label), so a value outside the contract may rightly succeed.
        skipped.append(negative_data_rejection)
    if case.method == "OPTIONS":
        # The 204 has no body and so no Content-Type, which OpenAPI 2.0 cannot say per
        # response (produces is per operation); the test below checks the 204 itself.
        skipped.append(content_type_conformance)
    return skipped


def test_preflight_answer_has_no_content_type(live_server: str) -> None:
    response = requests.options(
        live_server,
        headers={"Origin": "https://site.example", "Access-Control-Request-Method": "POST"},
        timeout=10,
    )

    assert response.status_code == 204
    assert "Content-Type" not in response.headers


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the repository
    derandomize=True,  # the same inputs on every run: a gate that fails, fails every time
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_live_function_keeps_the_contract(case: schemathesis.Case, live_server: str) -> None:
    # Checks: documented status, body schema, headers, content type, and no 5xx.
    case.call_and_validate(base_url=live_server, excluded_checks=checks_to_skip(case))
