"""DESIGN.md's quick start, as written, against a local receiver (only the URLs and the secrets'
source differ), plus the transport injection it promises."""

from __future__ import annotations

import anyio
import httpx
import pytest

from oqronkit import (
    Endpoint,
    OqronKit,
    Retries,
    Security,
    Throttle,
    verify_webhook_signature,
)
from tests.receiver import Receiver

pytestmark = pytest.mark.anyio
WEBHOOK_SECRET, ACME_SECRET = "platform-secret", "acme-secret"


async def test_design_quick_start(receiver: Receiver, tmp_path: object) -> None:
    kit = OqronKit(backend=f"sqlite:///{tmp_path}/oqronkit.db", allow_private_networks=True)

    platform = kit.webhook(
        name="platform-events",
        concurrency=10,
        retries=Retries(max=3, strategy="exponential", base_delay=2.0),
        security=Security(signing_secret=WEBHOOK_SECRET),
        endpoints=[
            Endpoint(
                name="AcmeCorp Integration",
                url=receiver.url("/acme"),
                events=["order.**", "user.signup"],
                security=Security(
                    signing_algorithm="sha256",
                    signing_secret=ACME_SECRET,
                    signing_header="x-acme-signature",
                ),
            ),
            Endpoint(
                name="Internal Analytics",
                url=receiver.url("/analytics"),
                events=["user.*.activated", "system.health"],
            ),
        ],
        throttle=Throttle(max=100, per=60.0),
    )

    async with kit:
        ids = await platform.fire("order.payment.completed", {"orderId": "ord_123"})
        [request] = await receiver.wait_for(1)
        with anyio.fail_after(10):
            while (d := await kit.get_delivery(ids[0])) is None or d.status != "completed":
                await anyio.sleep(0.01)

    assert len(ids) == 1 and request.path == "/acme"
    assert request.body == b'{"orderId":"ord_123"}'
    assert verify_webhook_signature(request.headers["x-acme-signature"], request.body, ACME_SECRET)


async def test_any_httpx_transport_can_be_injected() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="ok")

    kit = OqronKit(transport=httpx.MockTransport(handler))
    hook = kit.webhook("w", endpoints=[Endpoint("a", "https://hooks.example/a", ["**"])])
    async with kit:
        [delivery_id] = await hook.fire("e", {"n": 1})
        with anyio.fail_after(10):
            while (d := await kit.get_delivery(delivery_id)) is None or d.status != "completed":
                await anyio.sleep(0.01)
    assert d.attempts[0].response_body == "ok"
    assert seen[0].url == "https://hooks.example/a" and seen[0].content == b'{"n":1}'


async def test_a_failing_transport_or_security_callable_is_a_failed_attempt() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("transport bug")

    def no_vault() -> Security:
        raise KeyError("vault unreachable")

    kit = OqronKit(transport=httpx.MockTransport(broken))
    hook = kit.webhook(
        "w",
        endpoints=[
            Endpoint("a", "https://hooks.example/a", ["**"]),
            Endpoint("b", "https://hooks.example/b", ["**"], security=no_vault),
        ],
    )
    async with kit:
        ids = await hook.fire("e", {})
        with anyio.fail_after(10):
            while True:
                a, b = [await kit.get_delivery(i) for i in ids]
                if a and b and a.status == b.status == "delayed":
                    break
                await anyio.sleep(0.01)
    assert a is not None and a.error == "RuntimeError: transport bug"
    assert b is not None and b.error == "could not prepare the request: KeyError"
