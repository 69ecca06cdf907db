"""Bad input is refused where it is written, with a typed error, and nothing is stored: the
mistakes a review found getting through (a flag read from an environment variable, a bare
secret, credentials in a URL, header names in two letter cases, a bool where a number goes)."""

from __future__ import annotations

import math
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from oqronkit import (
    CircuitBreaker,
    ConfigurationError,
    DeliveryNotFound,
    Endpoint,
    InvalidEventName,
    InvalidPattern,
    OqronKit,
    RateLimit,
    Retries,
    Security,
    Throttle,
    sign_webhook_payload,
    verify_webhook_signature,
)
from oqronkit.backends.postgres import PostgresBackend
from oqronkit.backends.redis import RedisBackend
from oqronkit.errors import shown_url
from oqronkit.signing import sign_standard_webhook, verify_standard_webhook
from tests.conftest import BackendFactory
from tests.receiver import Receiver
from tests.test_dispatch import make_kit, status_of

pytestmark = pytest.mark.anyio

URL = "https://example.com/hooks"
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.mark.parametrize(
    "make",
    [
        lambda: OqronKit(allow_private_networks="false"),  # truthy: it would open everything
        lambda: OqronKit(allow_private_networks=1),
        lambda: OqronKit(allow_networks="10.0.0.0/8"),  # one network, read as characters
        lambda: OqronKit(dispatch="no"),
        lambda: Security("s", include_timestamp="no"),
        lambda: Endpoint("e", URL, ["**"], enabled="no"),
    ],
)
def test_a_flag_must_be_a_bool_not_text_that_reads_as_true(make: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"True or False|list of networks"):
        make()


@pytest.mark.parametrize(
    "make",
    [
        lambda: OqronKit(lease=True),
        lambda: OqronKit(hook_timeout=True),
        lambda: OqronKit(max_connections=True),
        lambda: OqronKit(response_body_cap=True),
        lambda: Endpoint("e", URL, ["**"], timeout=True),
        lambda: Endpoint("e", URL, ["**"], max_in_flight=True),
        lambda: Retries(base_delay=True),
        lambda: Retries(max=True),
        lambda: RateLimit(max=True, per=1.0),
        lambda: Throttle(max=10, per=True),
        lambda: CircuitBreaker(failure_threshold=True),
        lambda: CircuitBreaker(half_open_max=True),
        lambda: CircuitBreaker(failure_threshold=2.5),
        lambda: RateLimit(max="10", per=1.0),
    ],
)
def test_a_number_must_be_a_number_not_a_bool(make: Any) -> None:
    with pytest.raises(ConfigurationError, match="number"):
        make()


async def test_a_webhook_timeout_given_as_a_bool_is_refused_and_not_stored(
    make_backend: BackendFactory,
) -> None:
    kit = make_kit(make_backend)
    async with kit:
        with pytest.raises(ConfigurationError, match="timeout"):
            kit.webhook("w", endpoints=[], timeout=True)
        runtime = await kit.create_webhook("r", endpoints=[Endpoint("e", URL, ["**"])])
        with pytest.raises(ConfigurationError, match="timeout"):
            await kit.update_webhook("r", timeout=True)
        with pytest.raises(ConfigurationError, match="expected a Retries"):
            await kit.update_webhook("r", retries={"max": 1})
        with pytest.raises(ConfigurationError, match="expected a Retries"):
            await runtime.update_endpoint("e", retries={"max": 1})
        assert runtime.timeout == 30.0
        [endpoint] = await runtime.endpoints()
        assert endpoint.retries is None
        assert [w.name for w in await kit.webhooks()] == ["r"]


@pytest.mark.parametrize("security", ["whsec-platform", b"secret", ["s"]])
def test_security_is_a_security_or_a_callable_not_a_bare_secret(security: Any) -> None:
    kit = OqronKit()
    with pytest.raises(ConfigurationError, match=r"Security\(signing_secret=\.\.\.\)"):
        kit.webhook("w", endpoints=[], security=security)
    with pytest.raises(ConfigurationError, match=r"Security\(signing_secret=\.\.\.\)"):
        Endpoint("e", URL, ["**"], security=security)
    with pytest.raises(ConfigurationError, match="no webhook named"):
        kit.get_webhook("w")


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        (5, "a secret or a list"),
        ({"a", "b"}, "a secret or a list"),  # a set has no rotation order
        (["a", 5], "str or bytes"),
    ],
)
def test_every_signing_secret_is_checked(secret: Any, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        Security(secret)


def test_the_standard_scheme_refuses_settings_it_would_ignore() -> None:
    kit = OqronKit()
    for security, problem in (
        (Security(STANDARD_SECRET, signing_algorithm="sha512"), "signing_algorithm='sha512'"),
        (Security(STANDARD_SECRET, signing_header="X-My-Sig"), "signing_header='X-My-Sig'"),
        (Security(STANDARD_SECRET, include_timestamp=False), "include_timestamp=False"),
        (Security(b"\xff\xfe"), "a str"),
        (Security(STANDARD_SECRET.encode()), "a str"),
    ):
        with pytest.raises(ConfigurationError, match=problem):
            kit.webhook("w", endpoints=[], security=security, scheme="standard")
    with pytest.raises(ConfigurationError, match="a str"):
        sign_standard_webhook("msg_1", b"{}", b"whsec_abc")  # type: ignore[arg-type]
    kit.webhook("w", endpoints=[], security=Security(STANDARD_SECRET), scheme="standard")


@pytest.mark.parametrize(
    "url",
    [
        "https://alice:hunter2@example.com/hooks",
        "https://alice:hunter2@example.com:99999/hooks",  # a second problem: the port
        "https://hunter2@example.com/hooks",
    ],
)
def test_credentials_in_an_endpoint_url_are_refused_without_being_shown(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Endpoint("e", url, ["**"])
    assert "hunter2" not in str(caught.value)
    assert "***@example.com" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://svc:pa#ssSECRET@hooks.example.com/in",  # a URL parser reads a fragment
        "https://svc:pa?ssSECRET@hooks.example.com/in",  # ... a query
        "https://svc:pa/ssSECRET@hooks.example.com/in",  # ... a path
    ],
)
def test_credentials_with_url_delimiters_are_not_shown_either(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Endpoint("e", url, ["**"])
    assert "SECRET" not in str(caught.value) and "svc:***@hooks.example.com" in str(caught.value)


def test_backend_urls_show_no_password_whatever_it_holds() -> None:
    # libpq reads "pw#SECRET" as the password; the kit really opens such a URL.
    postgres = PostgresBackend("postgresql://app:pw#SECRET@127.0.0.1:5/db?password=SECRET2")
    redis = RedisBackend("redis://:Hunter?SECRET@127.0.0.1:6379/0?prefix=p")
    for shown in (repr(postgres), repr(redis), repr(OqronKit(postgres)), repr(OqronKit(redis))):
        assert "SECRET" not in shown and "***@127.0.0.1" in shown
    with pytest.raises(ConfigurationError) as caught:
        OqronKit("mysql://root:pw#SECRET@db/x")
    assert "SECRET" not in str(caught.value)


def test_secret_query_values_of_endpoint_urls_are_masked_where_they_show() -> None:
    endpoint = Endpoint("slack", "https://hooks.example.com/in?token=SECRET&team=a", ["**"])
    assert "SECRET" not in repr(endpoint) and "?token=***&team=a" in repr(endpoint)
    assert endpoint.url.endswith("?token=SECRET&team=a")  # sent as given


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (  # Slack: the last segment is the credential
            "https://hooks.slack.com/services/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",
            "https://hooks.slack.com/services/T0A1B2C3D/B0A1B2C3D/***",
        ),
        (  # Discord: a numeric id (shown), then the token
            "https://discord.com/api/webhooks/123456789012345678/" + "aZ0_" * 17,
            "https://discord.com/api/webhooks/123456789012345678/***",
        ),
        (
            "https://x.example/hook/550e8400-e29b-41d4-a716-446655440000?token=t&team=a",
            "https://x.example/hook/***?token=***&team=a",
        ),
        (  # a Slack token without a digit
            "https://hooks.slack.com/services/T0A1B2C3D/B0A1B2C3D/aBcDeFgHiJkLmNoPqRsTuVwX",
            "https://hooks.slack.com/services/T0A1B2C3D/B0A1B2C3D/***",
        ),
        (  # Telegram: `bot<id>:<token>`; and a fragment's parameters, like the query's
            "https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PA/send#sig=s&a=1",
            "https://api.telegram.org/***/send#sig=***&a=1",
        ),
        (  # words, however long, are not tokens
            "https://x.example/webhooks/notifications_subscription_handler/v2",
            "https://x.example/webhooks/notifications_subscription_handler/v2",
        ),
    ],
)
def test_token_like_path_segments_of_endpoint_urls_are_masked(url: str, shown: str) -> None:
    endpoint = Endpoint("hook", url, ["**"])
    assert f"url={shown!r}" in repr(endpoint) and endpoint.url == url  # sent as given
    assert shown_url(url) == shown


def test_an_at_sign_in_a_query_hides_no_secret_behind_it() -> None:
    # Taken for the end of a password (which may hold `?`), it must not unmask the query.
    endpoint = Endpoint("e", "https://x.example/hook?email=ops@corp.example&token=s3cr3t", ["*"])
    assert "s3cr3t" not in repr(endpoint) and "token=***" in repr(endpoint)


def test_a_sqlite_files_path_is_shown_whole() -> None:
    url = "sqlite:////var/lib/app/webhooks-2024-01-01.db"
    assert shown_url(url) == url


def test_an_endpoint_given_as_a_dict_is_refused_without_showing_it() -> None:
    kit = OqronKit()
    original_style = {"name": "a", "security": {"signingSecret": "SECRET"}}
    with pytest.raises(ConfigurationError) as caught:
        kit.webhook("w", endpoints=[original_style])  # type: ignore[list-item]
    assert "SECRET" not in str(caught.value) and "not a dict" in str(caught.value)


def test_user_agent_and_header_values_are_checked_where_they_are_given() -> None:
    with pytest.raises(ConfigurationError, match="control character"):
        OqronKit(user_agent="oqron\r\nX-Injected: yes")
    with pytest.raises(ConfigurationError, match="needs a str value"):
        Endpoint("e", URL, ["**"], headers={"X-Count": 5})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match="given twice"):
        Endpoint("e", URL, ["**"], headers={"X-Team": "a", "x-team": "b"})
    with pytest.raises(ConfigurationError, match="given twice"):
        OqronKit().webhook("w", endpoints=[], headers={"X-Team": "a", "X-TEAM": "b"})


async def test_an_endpoints_header_replaces_the_webhooks_whatever_the_letter_case(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    kit = make_kit(make_backend)
    hook = kit.webhook(
        "w",
        headers={"X-Team": "webhook-default"},
        endpoints=[
            Endpoint(
                "a",
                receiver.url("/a"),
                ["**"],
                headers={"x-team": "endpoint", "x-acme-signature": "placeholder"},
                security=Security("k", signing_header="X-Acme-Signature"),
            )
        ],
    )
    async with kit:
        [delivery_id] = await hook.fire("a.b", {})
        await status_of(kit, delivery_id, "completed")
    [request] = receiver.received()
    sent = [name.lower() for name, _ in request.raw_headers]
    assert sent.count("x-team") == 1 and request.headers["x-team"] == "endpoint"
    assert sent.count("x-acme-signature") == 1
    assert request.headers["x-acme-signature"].startswith("t=")


@pytest.mark.parametrize("tolerance", [math.nan, -5, True, "300"])
def test_a_verifiers_tolerance_must_be_seconds(tolerance: Any) -> None:
    header = sign_webhook_payload(b"{}", "s")
    with pytest.raises(ConfigurationError, match="tolerance"):
        verify_webhook_signature(header, b"{}", "s", tolerance=tolerance)
    headers = sign_standard_webhook("msg_1", b"{}", STANDARD_SECRET)
    with pytest.raises(ConfigurationError, match="tolerance"):
        verify_standard_webhook(headers, b"{}", STANDARD_SECRET, tolerance=tolerance)


def test_an_endless_tolerance_accepts_any_timestamp() -> None:
    old = sign_webhook_payload(b"{}", "s", timestamp=1_000)
    assert verify_webhook_signature(old, b"{}", "s", tolerance=math.inf)
    assert not verify_webhook_signature(old, b"{}", "s")
    headers = sign_standard_webhook("msg_1", b"{}", STANDARD_SECRET, timestamp=1)
    assert verify_standard_webhook(headers, b"{}", STANDARD_SECRET, tolerance=math.inf)
    assert verify_standard_webhook(headers, b"{}", STANDARD_SECRET, tolerance=1e300)


@pytest.mark.parametrize(
    "filters",
    [
        {"status": "failed"},  # a typo that would read as "no dead letters"
        {"limit": 0},
        {"limit": True},
        {"since": "yesterday"},
        {"until": math.nan},
        {"event": 5},
        {"webhook": ["w"]},
    ],
)
async def test_listing_refuses_filters_that_cannot_match_what_was_meant(
    filters: dict[str, Any],
) -> None:
    async with OqronKit() as kit:
        with pytest.raises(ConfigurationError):
            await kit.list_deliveries(**filters)


async def test_fire_refuses_arguments_of_the_wrong_type_and_stores_nothing(
    make_backend: BackendFactory,
) -> None:
    kit = make_kit(make_backend, dispatch=False)
    hook = kit.webhook("w", endpoints=[Endpoint("a", URL, ["**"])])
    async with kit:
        with pytest.raises(TypeError, match="event name is a str"):
            await hook.fire(5, {})  # type: ignore[arg-type]
        for key in (123, object(), b"key"):
            with pytest.raises(TypeError, match="idempotency_key must be a str"):
                await hook.fire("a.b", {}, idempotency_key=key)  # type: ignore[arg-type]
        for text in ("", "order\x00-1", "line\nbreak"):  # "" was ignored on PostgreSQL only
            with pytest.raises(ValueError, match="idempotency_key must be printable"):
                await hook.fire("a.b", {}, idempotency_key=text)
        assert await kit.list_deliveries() == []


@pytest.mark.parametrize(
    ("endpoints", "problem"),
    [
        (None, "list of Endpoint objects"),
        ([{"name": "a"}], "Endpoint objects"),
        ([Endpoint("a", URL, ["**"]), "b"], "Endpoint objects"),
    ],
)
def test_a_webhooks_endpoints_are_endpoints(endpoints: Any, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        OqronKit().webhook("w", endpoints=endpoints)


@pytest.mark.parametrize("events", [None, 5, [b"a.b"], ["a.b", None]])
def test_an_endpoints_events_are_pattern_strings(events: Any) -> None:
    with pytest.raises(ConfigurationError):
        Endpoint("e", URL, events)


async def test_an_error_inside_the_kit_block_comes_out_as_itself(
    make_backend: BackendFactory,
) -> None:
    """Not wrapped in the kit's task group's ExceptionGroup: `except DeliveryNotFound` works."""
    with pytest.raises(DeliveryNotFound):
        async with make_kit(make_backend, dispatch=False) as kit:
            await kit.resend_webhook("dlv_missing")


async def test_an_exception_group_raised_in_the_kit_block_comes_out_whole(
    make_backend: BackendFactory,
) -> None:
    group = ExceptionGroup("the block's own", [ValueError("a"), KeyError("b")])
    with pytest.raises(ExceptionGroup) as caught:
        async with make_kit(make_backend, dispatch=False):
            raise group
    assert caught.value is group


async def test_a_name_freed_by_deleting_a_runtime_webhook_can_be_defined_in_code() -> None:
    async with OqronKit(dispatch=False) as kit:
        await kit.create_webhook("w", endpoints=[Endpoint("e", URL, ["**"])])
        await kit.delete_webhook("w")
        kit.webhook("w", endpoints=[Endpoint("e", URL, ["**"])])  # the tombstone is no webhook


async def test_a_lone_surrogate_is_a_typed_error_in_batches_and_listing_filters() -> None:
    kit = OqronKit(dispatch=False)
    hook = kit.webhook("w", endpoints=[Endpoint("e", URL, ["**"])])
    async with kit:
        with pytest.raises(InvalidEventName):
            await hook.fire_many([("ok", 1), ("order.\ud800", 1)])
        with pytest.raises(InvalidPattern):
            await kit.list_deliveries(event="order.\ud800")
        assert await kit.list_deliveries() == []  # nothing of the batch was stored


async def test_fire_many_takes_pairs_and_names_the_item_that_is_not_one() -> None:
    # A str "ab" or a dict's key unpacked into an event and a payload, and stored.
    kit = OqronKit(dispatch=False)
    hook = kit.webhook("w", endpoints=[Endpoint("e", URL, ["**"])])
    async with kit:
        for batch, problem in (
            (("ab", "cd"), "item 0 is not one"),
            ({"xy": 1}, "item 0 is not one"),
            ([("a", 1), ("b", 2, 3)], "item 1 is not one"),
            ([("a", 1), [5, 1]], r"not a int \(item 1\)"),
        ):
            with pytest.raises(TypeError, match=problem):
                await hook.fire_many(batch)  # type: ignore[arg-type]
        assert await kit.list_deliveries() == []
        assert len(await hook.fire_many([("a", 1), ["b", 2]])) == 2  # type: ignore[list-item]


async def test_a_loop_of_fires_on_memory_lets_other_tasks_run() -> None:
    kit = OqronKit(dispatch=False)
    hook = kit.webhook("w", endpoints=[Endpoint("e", URL, ["**"])])
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            turns += 1
            await anyio.lowlevel.checkpoint()

    async with kit, anyio.create_task_group() as tg:
        tg.start_soon(other)
        for _ in range(100):
            await hook.fire("e", {})
        tg.cancel_scope.cancel()
    assert turns >= 50


def test_a_bytearray_secret_is_named_in_the_error() -> None:
    with pytest.raises(TypeError, match="not bytearray"):
        sign_webhook_payload(b"x", bytearray(b"key"), 1)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not a bytearray"):
        Security(signing_secret=bytearray(b"key"))  # type: ignore[arg-type]


def test_the_receiver_helpers_check_every_argument_even_without_a_header() -> None:
    # A dict of named secrets signed with the names, and a receiver deployed with no secret
    # answered False only once a signed request came: typed errors now, header or none.
    now = 1_700_000_000
    header = sign_webhook_payload(b"x", "s3", now * 1000)
    for secret in ({"current": "s3"}, None, 5, ["s3", None], bytearray(b"s3")):
        for given in (header, None):
            with pytest.raises(TypeError, match="secret must be bytes or str, or a list"):
                verify_webhook_signature(given, b"x", secret, now=now)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="secret must be bytes or str, or a list"):
            sign_webhook_payload(b"x", secret, now * 1000)  # type: ignore[arg-type]
    for bad_now, error in (
        ("1700000000", TypeError),
        (True, TypeError),
        (-1, ConfigurationError),
        (math.nan, ConfigurationError),
        (math.inf, ConfigurationError),
        (now * 1000, ConfigurationError),  # milliseconds by mistake
    ):
        with pytest.raises(error, match="now must be"):
            verify_webhook_signature(None, b"x", "s3", now=bad_now)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="empty"):
        verify_webhook_signature(None, b"x", "")
    for timestamp, error in ((True, TypeError), (1.5, TypeError), (-1, ConfigurationError)):
        with pytest.raises(error, match="timestamp must be"):
            sign_webhook_payload(b"x", "s3", timestamp)  # type: ignore[arg-type]
        with pytest.raises(error, match="timestamp must be"):
            sign_standard_webhook("msg_1", b"x", STANDARD_SECRET, timestamp)  # type: ignore[arg-type]
    signed = sign_standard_webhook("msg_1", b"x", STANDARD_SECRET, now)
    assert verify_standard_webhook(signed, b"x", STANDARD_SECRET, now=now)
    raw = {name.encode(): value for name, value in signed.items()}  # raw ASGI-style names
    for headers in (None, list(signed.items()), raw):
        with pytest.raises(TypeError, match="headers must be a mapping"):
            verify_standard_webhook(headers, b"x", STANDARD_SECRET, now=now)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        verify_standard_webhook({}, b"x", "whsec_!!")
    with pytest.raises(ConfigurationError, match="tolerance"):
        verify_standard_webhook({}, b"x", STANDARD_SECRET, tolerance=math.nan)


async def test_signers_of_a_rotating_security_callable_are_not_kept_for_ever(
    receiver: Receiver,
) -> None:
    from oqronkit.webhooks import SIGNER_CACHE

    secrets = iter(f"secret-{n}" for n in range(SIGNER_CACHE + 50))
    kit = OqronKit(allow_private_networks=True)
    hook = kit.webhook(
        "w",
        security=lambda: Security(signing_secret=next(secrets)),  # a vault's short-lived keys
        endpoints=[Endpoint("e", receiver.url("/e"), ["**"])],
    )
    async with kit:
        ids = await hook.fire_many([("e", n) for n in range(SIGNER_CACHE + 50)])
        for [delivery_id] in ids:
            await status_of(kit, delivery_id, "completed")
    assert len(hook._signers) == SIGNER_CACHE
