"""Lifecycle events for operators: what an application may want to alert on (an endpoint
disabled by a 410, a breaker opening or closing, a delivery going dead, a pause or resume).

Events are published by the process where they happen, to the `on_event` hook and to every
`kit.events()` subscriber. A subscriber that falls more than `buffer` events behind loses the
newest (counted in `dropped`, and logged): a slow alerting loop must never slow deliveries.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, TypeAlias

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

log = logging.getLogger("oqronkit")

EventKind: TypeAlias = Literal[
    "delivery.dead",
    "endpoint.disabled",
    "endpoint.paused",
    "endpoint.resumed",
    "breaker.opened",
    "breaker.closed",
    "webhook.paused",
    "webhook.resumed",
]


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    kind: EventKind
    webhook: str
    at: float
    endpoint: str | None = None
    delivery_id: str | None = None
    detail: str | None = None  # e.g. the last error of a dead delivery


class EventBus:
    def __init__(self, buffer: int = 1024) -> None:
        self.buffer = buffer
        self.dropped = 0
        self._subscribers: list[MemoryObjectSendStream[LifecycleEvent]] = []

    def publish(self, event: LifecycleEvent) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber.send_nowait(event)
            except anyio.WouldBlock:
                self.dropped += 1
                log.warning("an events() subscriber is %d behind; dropped %s", self.buffer, event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # it is leaving; `subscribe` removes it

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[MemoryObjectReceiveStream[LifecycleEvent]]:
        send, receive = anyio.create_memory_object_stream[LifecycleEvent](self.buffer)
        self._subscribers.append(send)
        try:
            with receive:
                yield receive
        finally:
            self._subscribers.remove(send)
            send.close()
