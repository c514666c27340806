"""The budget guard: takes the counter off the public internet once its budget is spent.

A CloudEvent function on the Pub/Sub topic of the budget's programmatic notifications, in the
format documented at
https://cloud.google.com/billing/docs/how-to/budgets-programmatic-notifications#notification_format
(costAmount, budgetAmount in the data; billingAccountId, budgetId, schemaVersion attributes).
At costAmount >= CLOSE_AT x budgetAmount it removes the public ways in, CLOSE_MEMBERS (allUsers,
and the gateway's account where the counter sits behind API Gateway), from the counter's
roles/run.invoker binding: visitors get 403 and the counter's costs stop growing.

Why IAM and not ingress: removing a member needs only run.services.getIamPolicy and
run.services.setIamPolicy on that one service (a custom role), while setting ingress to internal
needs run.services.update, which can also change the service's code. setIamPolicy can still grant
roles on that service, so the guard's service account must serve the guard alone.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import functions_framework
from cloudevents.http.event import CloudEvent
from google.cloud import run_v2
from google.iam.v1 import policy_pb2

INVOKER = "roles/run.invoker"
PUBLIC = "allUsers"
REOPEN = "./deploy.sh --reopen"
RUN_DEADLINE_SECONDS = 30.0  # the library sets no deadline; Eventarc retries a failure
_SERVICE = re.compile(r"projects/[^/]+/locations/[^/]+/services/[^/]+")
_MEMBER = re.compile(r"allUsers|serviceAccount:[^,\s]+@[^,\s]+")


class ConfigError(ValueError):
    """A setting in the environment is missing or malformed."""


class MalformedNotification(ValueError):
    """A Pub/Sub delivery that is not a budget notification."""


@dataclass(frozen=True)
class Settings:
    """The guard's configuration, read once from the environment."""

    service: str
    budget_id: str | None
    close_at: Decimal
    members: tuple[str, ...] = (PUBLIC,)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """COUNTER_SERVICE (required), BUDGET_ID, CLOSE_AT (default 1.0, > 0), CLOSE_MEMBERS."""
        service = env.get("COUNTER_SERVICE", "")
        if not _SERVICE.fullmatch(service):
            raise ConfigError(
                f"COUNTER_SERVICE={service!r}: expected projects/P/locations/R/services/S"
            )
        budget_id = env.get("BUDGET_ID") or None
        if budget_id and "/" in budget_id:
            raise ConfigError(f"BUDGET_ID={budget_id!r}: expected the id after budgets/")
        raw = env.get("CLOSE_AT") or "1.0"
        try:
            close_at = Decimal(raw)
            valid = close_at.is_finite() and close_at > 0
        except InvalidOperation:
            valid = False
        if not valid:
            raise ConfigError(f"CLOSE_AT={raw!r}: expected a number above 0, e.g. 0.9")
        listed = env.get("CLOSE_MEMBERS") or PUBLIC
        members = tuple(member.strip() for member in listed.split(",") if member.strip())
        if not members or any(not _MEMBER.fullmatch(member) for member in members):
            raise ConfigError(
                f"CLOSE_MEMBERS={listed!r}: expected allUsers or serviceAccount:EMAIL, by commas"
            )
        return cls(service, budget_id, close_at, members)


@dataclass(frozen=True)
class Notification:
    """What the guard reads from one budget notification."""

    budget_id: str | None
    cost: Decimal
    budget: Decimal
    currency: str


# Checked at start-up, so a bad setting fails the deploy with its message.
SETTINGS = Settings.from_env(os.environ)


def log(severity: str, message: str, **fields: object) -> None:
    """One JSON line on stdout, as Cloud Logging reads it (like the counter's counter/logs.py)."""
    entry = {"severity": severity, "message": message, **fields}
    print(json.dumps(entry, separators=(",", ":"), default=str), flush=True)


def read_notification(data: object) -> Notification:
    """The budget notification in an Eventarc Pub/Sub event's data, or MalformedNotification."""
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, dict) or not isinstance(message.get("data"), str):
        raise MalformedNotification("the event holds no Pub/Sub message data")
    try:
        # Decimals, so that 1.1 x 100 is 110 exactly (in binary floats, 110.00000000000001).
        body = json.loads(base64.b64decode(message["data"], validate=True), parse_float=Decimal)
    except ValueError as exc:  # binascii, Unicode and JSON errors are all ValueErrors
        raise MalformedNotification(f"the message data is not base64 of JSON ({exc})") from None
    if not isinstance(body, dict):
        raise MalformedNotification("the message data is not a JSON object")
    cost, budget = body.get("costAmount"), body.get("budgetAmount")
    if not _is_amount(cost) or not _is_amount(budget) or budget <= 0:
        amounts = f"costAmount {reprlib.repr(cost)}, budgetAmount {reprlib.repr(budget)}"
        raise MalformedNotification(f"{amounts}: expected numbers, the budget above 0")
    attributes = message.get("attributes")
    budget_id = attributes.get("budgetId") if isinstance(attributes, dict) else None
    return Notification(
        budget_id, Decimal(cost), Decimal(budget), str(body.get("currencyCode", ""))
    )


def _is_amount(value: object) -> bool:
    # JSON's NaN and Infinity come as floats, true and false as bools: none is an amount.
    if isinstance(value, Decimal):
        return value.is_finite()
    return isinstance(value, int) and not isinstance(value, bool)


@functools.cache
def run_client() -> run_v2.ServicesClient:
    """One Run client per instance, made on first use: under budget the guard calls nothing."""
    return run_v2.ServicesClient()


def drop_public_invoker(policy: policy_pb2.Policy, members: tuple[str, ...]) -> bool:
    """Remove these members from the policy's run.invoker bindings; whether any was there."""
    found = False
    for index in reversed(range(len(policy.bindings))):
        binding = policy.bindings[index]
        if binding.role != INVOKER:
            continue
        for member in members:
            if member in binding.members:
                binding.members.remove(member)
                found = True
        if not binding.members:
            del policy.bindings[index]
    return found


def close(service: str, members: tuple[str, ...]) -> bool:
    """Take these members off the service's invokers; False if none of them was on."""
    client = run_client()
    policy = client.get_iam_policy(request={"resource": service}, timeout=RUN_DEADLINE_SECONDS)
    if not drop_public_invoker(policy, members):
        return False
    # The policy keeps the etag it was read with: if it changed since, IAM answers ABORTED and
    # Eventarc's retry reads it afresh instead of overwriting someone else's change.
    request = {"resource": service, "policy": policy}
    client.set_iam_policy(request=request, timeout=RUN_DEADLINE_SECONDS)
    return True


@functions_framework.cloud_event
def guard(cloud_event: CloudEvent) -> None:
    """Close the counter to the public when a notification's cost reaches CLOSE_AT x budget."""
    try:
        notification = read_notification(cloud_event.data)
    except MalformedNotification as exc:
        # Returning acknowledges it: raising would have Pub/Sub deliver it again for days.
        log("ERROR", f"Not a budget notification, ignored: {exc}", eventId=cloud_event["id"])
        return
    cost, budget = notification.cost, notification.budget
    amounts = f"{cost} of {budget} {notification.currency}".rstrip()
    if SETTINGS.budget_id and notification.budget_id != SETTINGS.budget_id:
        log("INFO", f"Budget {notification.budget_id} is not the counter's: nothing done")
    elif cost < SETTINGS.close_at * budget:
        log("INFO", f"Spent {amounts}, under CLOSE_AT={SETTINGS.close_at}: the counter stays open")
    elif close(SETTINGS.service, SETTINGS.members):
        removed = ", ".join(SETTINGS.members)
        closed = f"{SETTINGS.service} is closed to the public ({removed} removed from {INVOKER})"
        reached = f"Spent {amounts}, at least CLOSE_AT={SETTINGS.close_at} of the budget"
        log("CRITICAL", f"{reached}. The counter {closed}. Reopen: {REOPEN}")
    else:
        log("INFO", f"Spent {amounts}; the counter was already closed. Reopen: {REOPEN}")
