"""The records OqronKit stores and returns. Bodies are stored once per fire (the message); each
matched endpoint gets a delivery that points at it. No record holds a secret or a signature."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeAlias, get_args

Status: TypeAlias = Literal[
    "waiting", "active", "delayed", "completed", "dead", "cancelled", "held"
]
STATUSES: tuple[Status, ...] = get_args(Status)
CancelOutcome: TypeAlias = Literal["cancelled", "requested", "finished", "missing"]
QUEUED: frozenset[Status] = frozenset({"waiting", "delayed"})
TERMINAL: frozenset[Status] = frozenset({"completed", "dead", "cancelled"})


@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP attempt: when, how long, and the answer (`status`) or the failure (`error`)."""

    at: float
    duration: float
    status: int | None = None
    error: str | None = None
    response_body: str | None = None


class Message(NamedTuple):
    """One fire: the serialised body, stored once however many endpoints match."""

    id: str
    webhook: str
    event: str
    body: bytes
    created_at: float
    idempotency_key: str | None = None


class NewDelivery(NamedTuple):
    """A delivery as `fire` creates it. A tuple: fan-out makes these by the hundred thousand."""

    id: str
    message_id: str
    webhook: str
    endpoint_name: str
    event: str
    idempotency_key: str
    created_at: float
    resent_from: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """A delivery as `get_delivery` and `list_deliveries` return it."""

    id: str
    webhook: str
    endpoint_name: str
    event: str
    status: Status
    attempts: tuple[Attempt, ...]
    error: str | None  # why it is not (yet) delivered; None once completed
    idempotency_key: str
    next_attempt_at: float | None
    created_at: float
    updated_at: float
    message_id: str
    resent_from: str | None = None  # the delivery this one was resent from


class Claim(NamedTuple):
    """A delivery leased to one worker for one attempt, with the body it carries. A tuple, like
    the records below it: one is made per attempt, at a fifth of a frozen dataclass's cost."""

    id: str
    message_id: str
    webhook: str
    endpoint_name: str
    event: str
    body: bytes
    attempts_made: int
    idempotency_key: str
    created_at: float


class Settlement(NamedTuple):
    """How an attempt (or a deferral, or a shutdown) leaves a claimed delivery."""

    status: Status
    next_attempt_at: float | None = None
    attempt: Attempt | None = None
    error: str | None = None


CANCELLED = Settlement("cancelled", error="cancelled")
"""How an attempt stopped by `cancel_delivery` settles; a requeue settles so too when a cancel
was asked while the attempt ran (its attempt, if one was made, is kept)."""

# Seconds the stored definitions (runtime webhooks and endpoints, pauses) may be stale in a
# process: changes made by other processes take effect there within this time.
DEFINITIONS_TTL = 1.0

# Why deliveries were discarded (cancelled): their definition is gone, and a later one of the
# same name must not receive what was queued for the old one (they can be resent by id).
WEBHOOK_DELETED = "cancelled: its webhook was deleted"
ENDPOINT_REMOVED = "cancelled: its endpoint was removed"

Document: TypeAlias = Mapping[str, Any]  # a persisted definition, as JSON-compatible values
WEBHOOK = ""  # the endpoint key of a webhook's own definition and pause flag
# The tombstones a deleted webhook and a removed endpoint leave: their documents become
# `{DELETED: True}` (beside a pause flag) and `{REMOVED: True}`.
DELETED = "deleted"
REMOVED = "removed"


class Definitions(NamedTuple):
    """What runtime operations persisted: definition documents and pause flags, each keyed by
    (webhook, endpoint name) with `WEBHOOK` as the endpoint for the webhook itself. `version`
    changes with every write, so a kit can cheaply tell whether its copy is current."""

    version: int
    documents: Mapping[tuple[str, str], Document]
    paused: frozenset[tuple[str, str]]

    def is_paused(self, webhook: str, endpoint: str) -> bool:
        return (webhook, WEBHOOK) in self.paused or (webhook, endpoint) in self.paused

    def __repr__(self) -> str:  # documents hold secrets: never shown
        return (
            f"Definitions(version={self.version}, documents={len(self.documents)}, "
            f"paused={sorted(self.paused)})"
        )


NO_DEFINITIONS = Definitions(-1, {}, frozenset())
