"""`postgresql://user@host/database?schema=name`: many workers on many machines, SQL shops.

psycopg 3 with a `psycopg_pool.ConnectionPool` (sync: no async PostgreSQL driver runs on Trio),
every operation a synchronous function run in a worker thread through anyio. The queue is the
deliveries table itself (status + due time), so a state change and its queue entry are one row
in one transaction. Claims lock rows with `FOR UPDATE SKIP LOCKED`: concurrent workers never
wait for each other nor get the same delivery. Transactions that make a delivery ready now send
`pg_notify` (delivered at commit), and `watch` listens for them.

No call waits for ever: the server bounds each statement (`statement_timeout`), and a call
still without an answer at three times that has its connection cut under it
(`_CallDeadlines`), for a server that hangs or a connection that went silent. `watch` checks
its LISTEN connection the same way every 10 seconds.

Round trips: every operation is one (a single statement, or a transaction sent as one pipelined
batch), except `update_state` (two: it reads, runs the caller's update, then writes) and
`list_deliveries` by an event glob SQL cannot narrow (a page of rows per round trip).

Pause flags are read by whatever may queue a delivery (enqueue, settle, resend, lease expiry)
under a shared per-webhook advisory lock taken in an earlier statement of its transaction, and
changed under the exclusive one, so a pause and a concurrent fire can never leave a delivery
queued under a pause (in READ COMMITTED each statement sees what committed before it began).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, LiteralString, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import anyio
import psycopg
from anyio.lowlevel import RunVar
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from oqronkit.backends.base import (
    Backend,
    SettleRequest,
    StateUpdate,
    glob_predicate,
)
from oqronkit.errors import ConfigurationError, shown_url
from oqronkit.models import (
    DELETED,
    REMOVED,
    WEBHOOK,
    Attempt,
    CancelOutcome,
    Claim,
    Definitions,
    Delivery,
    Document,
    Message,
    NewDelivery,
    Settlement,
    Status,
)

T = TypeVar("T")
log = logging.getLogger(__name__)
Connection = psycopg.Connection[TupleRow]

DEFAULT_SCHEMA = "oqronkit"
LISTEN_CHECK_INTERVAL = 10.0  # seconds between checks that the LISTEN connection still answers
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SECRET_PARAMETERS = {"password", "sslpassword"}

# Each entry migrates the schema one version up; applied in order, each exactly once.
MIGRATIONS: list[list[LiteralString]] = [
    [
        """
        CREATE TABLE messages (
            id text PRIMARY KEY,
            webhook text NOT NULL,
            event text NOT NULL,
            body bytea NOT NULL,
            created_at double precision NOT NULL,
            idempotency_key text,
            delivery_ids jsonb  -- kept only for fires with an idempotency key (repeats)
        )
        """,
        "CREATE INDEX messages_fire_key ON messages (webhook, idempotency_key, created_at) "
        "WHERE idempotency_key IS NOT NULL",
        """
        CREATE TABLE deliveries (
            id text PRIMARY KEY,
            message_id text NOT NULL,  -- no foreign key: fan-out inserts stay cheap
            webhook text NOT NULL,
            endpoint text NOT NULL,
            event text NOT NULL,
            status text NOT NULL CHECK (status IN
                ('waiting', 'active', 'delayed', 'completed', 'dead', 'cancelled', 'held')),
            attempts jsonb NOT NULL DEFAULT '[]',
            attempts_made integer NOT NULL DEFAULT 0,
            error text,
            idempotency_key text NOT NULL,
            next_attempt_at double precision,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            lease_owner text,
            lease_until double precision,
            resent_from text,
            cancel_requested boolean NOT NULL DEFAULT false
        )
        """,
        # The claim path: a webhook's ready deliveries earliest first, all or one endpoint's;
        # partial, so finished deliveries (most of the table) cost the claims nothing.
        "CREATE INDEX deliveries_queue ON deliveries (webhook, next_attempt_at, id) "
        "WHERE status IN ('waiting', 'delayed')",
        "CREATE INDEX deliveries_endpoint_queue ON deliveries "
        "(webhook, endpoint, next_attempt_at, id) WHERE status IN ('waiting', 'delayed')",
        # Lease expiry (claims reclaim, `next_due` waits for it) and what a release frees.
        "CREATE INDEX deliveries_leases ON deliveries (webhook, lease_until) "
        "WHERE status = 'active'",
        "CREATE INDEX deliveries_held ON deliveries (webhook, endpoint) WHERE status = 'held'",
        """
        CREATE TABLE definitions (
            webhook text NOT NULL,
            endpoint text NOT NULL,  -- '' for the webhook itself
            document jsonb,          -- NULL when only the pause flag is stored
            paused boolean NOT NULL DEFAULT false,
            PRIMARY KEY (webhook, endpoint)
        )
        """,
        """
        CREATE TABLE definitions_version (
            id integer PRIMARY KEY CHECK (id = 1),
            version bigint NOT NULL
        )
        """,
        "INSERT INTO definitions_version VALUES (1, 0)",
        # A breaker or bucket snapshot per key; NULL only inside `update_state`'s transaction
        # (a row it created to lock a key that had none).
        "CREATE TABLE guard_states (key text PRIMARY KEY, state text)",
    ],
    [
        # Resent copies by message and endpoint (replay skips what was resent); fires add none.
        "CREATE INDEX deliveries_resends ON deliveries (message_id, endpoint, id) "
        "WHERE resent_from IS NOT NULL",
    ],
]


def _paused(row: LiteralString) -> LiteralString:
    """SQL: whether the delivery `row` (an alias with webhook and endpoint) is under a pause."""
    return (
        "EXISTS (SELECT 1 FROM definitions p WHERE p.paused "
        f"AND p.webhook = {row}.webhook AND p.endpoint IN ('', {row}.endpoint))"
    )


def _held_if_paused(row: LiteralString) -> LiteralString:
    return f"CASE WHEN {_paused(row)} THEN 'held' ELSE 'waiting' END"


def _notify_ready(source: LiteralString) -> LiteralString:
    """SQL: a count after notifying, once per webhook, the webhooks of `source` rows (webhook,
    status) that are ready now. The notifications go out at commit."""
    return (
        "(SELECT count(pg_notify(%(channel)s, w)::text) FROM "
        f"(SELECT DISTINCT webhook AS w FROM {source} WHERE status = 'waiting') ready)"
    )


_DELIVERY_COLUMNS: LiteralString = (
    "id, webhook, endpoint, event, status, attempts, error, idempotency_key, next_attempt_at, "
    "created_at, updated_at, message_id, resent_from"
)
_LOCK_SHARED: LiteralString = "SELECT pg_advisory_xact_lock_shared(%s, hashtext(%s))"
_LOCK_EXCLUSIVE: LiteralString = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"
_INSERT_DELIVERIES: LiteralString = (
    "INSERT INTO deliveries (id, message_id, webhook, endpoint, event, status, idempotency_key, "
    "next_attempt_at, created_at, updated_at, resent_from) "
)

_CLAIM: LiteralString = f"""
WITH expired AS MATERIALIZED (
    -- expired leases: ready again (held if paused meanwhile), due now; or
    -- cancelled, if that was asked before their worker was gone
    SELECT d.id, d.endpoint, %(now)s::float8 AS due, {_paused("d")} AS paused,
           d.cancel_requested AS cancel
    FROM deliveries d
    WHERE d.webhook = %(webhook)s AND d.status = 'active' AND d.lease_until <= %(now)s
    FOR UPDATE SKIP LOCKED
), room AS (
    SELECT endpoint, greatest(room, 0) AS room
    FROM unnest(%(endpoints)s::text[], %(rooms)s::int[]) AS r (endpoint, room)
), capped AS MATERIALIZED (
    -- the earliest ready of each endpoint with a cap, no more than its room
    SELECT x.id, x.endpoint, x.next_attempt_at AS due
    FROM room CROSS JOIN LATERAL (
        SELECT d.id, d.endpoint, d.next_attempt_at FROM deliveries d
        WHERE d.webhook = %(webhook)s AND d.endpoint = room.endpoint
          AND d.status IN ('waiting', 'delayed') AND d.next_attempt_at <= %(now)s
        ORDER BY d.next_attempt_at, d.id
        LIMIT least(room.room, %(limit)s)
        FOR UPDATE SKIP LOCKED
    ) x
), free AS MATERIALIZED (
    -- the earliest ready of the endpoints without a cap
    SELECT d.id, d.endpoint, d.next_attempt_at AS due FROM deliveries d
    WHERE d.webhook = %(webhook)s AND d.status IN ('waiting', 'delayed')
      AND d.next_attempt_at <= %(now)s AND d.endpoint <> ALL (%(endpoints)s::text[])
    ORDER BY d.next_attempt_at, d.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), candidates AS (
    SELECT id, endpoint, due,
           row_number() OVER (PARTITION BY endpoint ORDER BY due, id) AS nth
    FROM (SELECT id, endpoint, due FROM capped
          UNION ALL SELECT id, endpoint, due FROM free
          UNION ALL SELECT id, endpoint, due FROM expired WHERE NOT paused AND NOT cancel) c
), chosen AS MATERIALIZED (
    SELECT c.id, c.due FROM candidates c LEFT JOIN room ON room.endpoint = c.endpoint
    WHERE c.nth <= coalesce(room.room, %(limit)s)
    ORDER BY c.due, c.id
    LIMIT %(limit)s
), claimed AS (
    UPDATE deliveries d
    SET status = 'active', lease_owner = %(owner)s, lease_until = %(lease_until)s,
        updated_at = %(now)s, next_attempt_at = c.due  -- an expired lease's: now, as requeued
    FROM chosen c WHERE d.id = c.id
    RETURNING d.id, d.message_id, d.webhook, d.endpoint, d.event, d.attempts_made,
              d.idempotency_key, d.created_at, c.due
), requeued AS (
    UPDATE deliveries d
    SET status = CASE WHEN e.cancel THEN 'cancelled' WHEN e.paused THEN 'held' ELSE 'waiting' END,
        next_attempt_at = CASE WHEN e.cancel THEN NULL ELSE e.due END,
        updated_at = %(now)s, lease_owner = NULL, lease_until = NULL, cancel_requested = false
    FROM expired e WHERE d.id = e.id AND e.id NOT IN (SELECT id FROM chosen)
    RETURNING d.webhook, d.status
)
SELECT c.id, c.message_id, c.webhook, c.endpoint, c.event, m.body, c.attempts_made,
       c.idempotency_key, c.created_at
-- a row even when nothing was claimed: the notification is sent either way
FROM (SELECT {_notify_ready("requeued")}) AS notified
LEFT JOIN (claimed c JOIN messages m ON m.id = c.message_id) ON true
ORDER BY c.due, c.id
"""

# A cancel asked while the attempt ran wins over anything but a delivery (SET reads the old
# row): a failed last attempt ends cancelled, not dead.
_CANCEL_WINS = "(d.cancel_requested AND %(status)s NOT IN ('completed', 'cancelled'))"
_SETTLE: LiteralString = f"""
WITH settled AS (
    UPDATE deliveries d SET
        status = CASE WHEN {_CANCEL_WINS} THEN 'cancelled'
                      WHEN %(status)s IN ('waiting', 'delayed') AND {_paused("d")} THEN 'held'
                      ELSE %(status)s END,
        updated_at = %(now)s,
        -- held keeps its schedule for its release; finished ones have none
        next_attempt_at = CASE WHEN {_CANCEL_WINS} THEN NULL
                               WHEN %(status)s = 'held' THEN d.next_attempt_at
                               ELSE %(due)s::float8 END,
        error = CASE WHEN {_CANCEL_WINS} THEN 'cancelled'
                     WHEN %(status)s = 'completed' THEN NULL  -- failures stay in attempts
                     ELSE coalesce(%(error)s::text, d.error) END,
        attempts = CASE WHEN %(attempt)s::jsonb IS NULL THEN d.attempts
                        ELSE d.attempts || jsonb_build_array(%(attempt)s::jsonb) END,
        attempts_made = d.attempts_made + CASE WHEN %(attempt)s::jsonb IS NULL THEN 0 ELSE 1 END,
        lease_owner = NULL, lease_until = NULL, cancel_requested = false
    WHERE d.id = %(id)s AND d.status = 'active' AND d.lease_owner = %(owner)s
    RETURNING d.*
)
SELECT {_DELIVERY_COLUMNS}, {_notify_ready("settled")} FROM settled
"""

_RESEND: LiteralString = f"""
WITH copy AS (
    {_INSERT_DELIVERIES}
    SELECT %(new_id)s, d.message_id, d.webhook, d.endpoint, d.event, {_held_if_paused("d")},
           d.idempotency_key, %(now)s, %(now)s, %(now)s, d.id
    FROM deliveries d
    WHERE d.id = %(id)s AND d.status IN ('completed', 'dead', 'cancelled')
    RETURNING *
)
SELECT {_DELIVERY_COLUMNS}, {_notify_ready("copy")} FROM copy
"""

_CANCEL: LiteralString = """
WITH found AS MATERIALIZED (
    -- an active one whose lease ran out lost its worker: it is cancelled like a queued one
    SELECT id, CASE WHEN status = 'active' AND lease_until <= %(now)s THEN 'waiting'
                    ELSE status END AS status
    FROM deliveries WHERE id = %(id)s FOR UPDATE
), changed AS (
    -- a queued or held one is cancelled; an active one is flagged for its worker
    UPDATE deliveries d SET
        status = CASE WHEN f.status = 'active' THEN d.status ELSE 'cancelled' END,
        cancel_requested = f.status = 'active',
        next_attempt_at = CASE WHEN f.status = 'active' THEN d.next_attempt_at END,
        updated_at = CASE WHEN f.status = 'active' THEN d.updated_at ELSE %(now)s END,
        lease_owner = CASE WHEN f.status = 'active' THEN d.lease_owner END,
        lease_until = CASE WHEN f.status = 'active' THEN d.lease_until END
    FROM found f
    WHERE d.id = f.id AND f.status NOT IN ('completed', 'dead', 'cancelled')
    RETURNING d.id
)
SELECT status, (SELECT count(*) FROM changed) FROM found
"""

_NEXT_DUE: LiteralString = """
SELECT least(
    (SELECT min(next_attempt_at) FROM deliveries
     WHERE webhook = %(webhook)s AND status IN ('waiting', 'delayed')
       AND endpoint <> ALL (%(skip)s::text[])),
    (SELECT min(lease_until) FROM deliveries WHERE webhook = %(webhook)s AND status = 'active'))
"""

_DEFINITIONS: LiteralString = """
SELECT v.version, d.webhook, d.endpoint, d.document, d.paused
FROM definitions_version v
LEFT JOIN definitions d ON v.version IS DISTINCT FROM %(known)s::bigint
"""

# Top-level keys whose value is JSON null removed: how a merge deletes keys.
_MERGED: LiteralString = (
    "coalesce((SELECT jsonb_object_agg(key, value) FROM jsonb_each(coalesce(t.document, '{}') "
    "|| %(changes)s::jsonb) WHERE value <> 'null'::jsonb), '{}')"
)
_WRITE_DEFINITION: LiteralString = f"""
INSERT INTO definitions AS t (webhook, endpoint, document)
VALUES (%(webhook)s, %(endpoint)s, %(document)s::jsonb)
ON CONFLICT (webhook, endpoint) DO UPDATE SET document = CASE
    WHEN %(changes)s::jsonb IS NULL OR %(replace)s THEN excluded.document
    ELSE {_MERGED} END
RETURNING document
"""
_BUMP_VERSION: LiteralString = "UPDATE definitions_version SET version = version + 1"
_DROP_EMPTY: LiteralString = (
    "DELETE FROM definitions WHERE webhook = %s AND endpoint = %s "
    "AND document IS NULL AND NOT paused"
)
_SET_PAUSED: LiteralString = (
    "INSERT INTO definitions (webhook, endpoint, paused) VALUES (%s, %s, %s) "
    "ON CONFLICT (webhook, endpoint) DO UPDATE SET paused = excluded.paused"
)
_HOLD: LiteralString = (
    "UPDATE deliveries SET status = 'held', updated_at = %(now)s "
    "WHERE webhook = %(webhook)s AND status IN ('waiting', 'delayed') "
    "AND (%(endpoint)s = '' OR endpoint = %(endpoint)s)"
)
_DISCARD: LiteralString = (
    "UPDATE deliveries SET "
    "status = CASE WHEN status = 'active' THEN status ELSE 'cancelled' END, "
    "cancel_requested = status = 'active', "  # their workers stop the attempts
    "error = CASE WHEN status = 'active' THEN error ELSE %(reason)s END, "
    "next_attempt_at = CASE WHEN status = 'active' THEN next_attempt_at END, "
    "updated_at = CASE WHEN status = 'active' THEN updated_at ELSE %(now)s END "
    "WHERE webhook = %(webhook)s AND status IN ('waiting', 'delayed', 'held', 'active') "
    "AND (%(endpoint)s = '' OR endpoint = %(endpoint)s)"
)
_RELEASE: LiteralString = f"""
WITH released AS (
    UPDATE deliveries d SET updated_at = %(now)s,
        status = CASE WHEN d.next_attempt_at > %(now)s THEN 'delayed' ELSE 'waiting' END,
        next_attempt_at = coalesce(d.next_attempt_at, %(now)s)
    WHERE d.webhook = %(webhook)s AND d.status = 'held'
      AND (%(endpoint)s = '' OR d.endpoint = %(endpoint)s) AND NOT {_paused("d")}
    RETURNING d.webhook, d.status
)
SELECT (SELECT count(*) FROM released), {_notify_ready("released")}
"""


def _enqueue_sql(idempotent: bool) -> LiteralString:
    """One statement storing a fire. With `idempotent`, nothing is stored if an earlier fire
    of the same webhook and key is within the window; its delivery ids are returned instead."""
    earlier: LiteralString = ""
    fresh: LiteralString = ""
    repeat: LiteralString = "NULL::jsonb"
    if idempotent:
        earlier = """
        earlier AS MATERIALIZED (
            SELECT delivery_ids FROM messages
            WHERE webhook = %(key_webhook)s AND idempotency_key = %(key)s
              AND created_at >= %(since)s
            ORDER BY created_at DESC LIMIT 1
        ),"""
        fresh = "WHERE NOT EXISTS (SELECT 1 FROM earlier)"
        repeat = "(SELECT delivery_ids FROM earlier)"
    return f"""
    WITH {earlier}
    stored AS (
        INSERT INTO messages (id, webhook, event, body, created_at, idempotency_key, delivery_ids)
        SELECT * FROM unnest(%(m_id)b::text[], %(m_webhook)b::text[], %(m_event)b::text[],
            %(m_body)b::bytea[], %(m_at)b::float8[], %(m_key)b::text[], %(m_ids)b::jsonb[])
        {fresh}
    ), queued AS (
        {_INSERT_DELIVERIES}
        SELECT n.id, n.message_id, n.webhook, n.endpoint, n.event, {_held_if_paused("n")},
               n.idempotency_key, n.created_at, n.created_at, n.created_at, n.resent_from
        FROM unnest(%(id)b::text[], %(message_id)b::text[], %(webhook)b::text[],
            %(endpoint)b::text[], %(event)b::text[], %(idempotency_key)b::text[],
            %(created_at)b::float8[], %(resent_from)b::text[])
            AS n (id, message_id, webhook, endpoint, event, idempotency_key, created_at,
                  resent_from)
        {fresh}
        RETURNING webhook, status
    )
    SELECT {repeat}, {_notify_ready("queued")}
    """


_ENQUEUE = _enqueue_sql(idempotent=False)
_ENQUEUE_IDEMPOTENT = _enqueue_sql(idempotent=True)


def _delivery(row: Sequence[Any]) -> Delivery:
    return Delivery(
        id=row[0],
        webhook=row[1],
        endpoint_name=row[2],
        event=row[3],
        status=row[4],
        attempts=tuple(Attempt(**a) for a in row[5]),
        error=row[6],
        idempotency_key=row[7],
        next_attempt_at=row[8],
        created_at=row[9],
        updated_at=row[10],
        message_id=row[11],
        resent_from=row[12],
    )


def _attempt_json(attempt: Attempt) -> str:
    return json.dumps(
        {
            "at": attempt.at,
            "duration": attempt.duration,
            "status": attempt.status,
            "error": attempt.error,
            "response_body": attempt.response_body,
        }
    )


def _int4(text: str) -> int:
    """A stable signed 32-bit number for `text`: an advisory lock namespace."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big", signed=True)


def _event_prefilter(pattern: str) -> tuple[LiteralString, str] | None:
    """SQL narrowing the events `pattern` may match (the Rust matcher decides): its leading
    literal segments, or the whole event when it has no wildcard segment."""
    segments = pattern.split(".")
    if pattern in ("*", "**"):
        return None
    literal = []
    for segment in segments:
        if segment in ("*", "**"):
            break
        literal.append(segment)
    if len(literal) == len(segments):
        return "event = %s", pattern
    if not literal:
        return None
    prefix = ".".join(literal) + "."
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return "event LIKE %s", escaped + "%"


def _split_url(url: str) -> tuple[str, str | None]:
    """The conninfo for psycopg, without our `schema` query parameter, and that parameter."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        return url, None  # a key=value conninfo string
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    if not schemas:
        return url, None
    kept = [(key, value) for key, value in query if key != "schema"]
    # quote, not quote_plus: libpq reads no `+` as a space
    return urlunsplit(parts._replace(query=urlencode(kept, quote_via=quote))), schemas[-1]


# libpq's TCP settings, unless the URL gives its own: a server that vanished without a word (a
# failover, a dropped route) fails calls within ~30 s instead of the kernel's ~15 minutes of
# retransmits (`tcp_user_timeout`, data unacknowledged) or for ever (keepalives, a reply
# awaited), and a connection attempt gives up after 10 s.
TCP_DEFAULTS = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "4",
    "tcp_user_timeout": "30000",  # ms
    "connect_timeout": "10",
}


def _connect_options(conninfo: str) -> dict[str, Any]:
    """What every connection is opened with, besides `conninfo`: autocommit, and the TCP
    defaults that neither `conninfo`, libpq's environment nor a service file sets (psycopg
    lets these keywords override all three)."""
    try:
        given = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:  # libpq's words quote what it tripped on: a password too
        message = f"invalid PostgreSQL URL {_redacted(conninfo)!r}: libpq cannot read it"
        raise ConfigurationError(message) from None
    if "service" in given or os.environ.get("PGSERVICE"):
        return {"autocommit": True}  # the service file has the last word
    tcp = {key: value for key, value in TCP_DEFAULTS.items() if key not in given}
    if os.environ.get("PGCONNECT_TIMEOUT"):  # the only one of these with a variable
        del tcp["connect_timeout"]
    return {"autocommit": True, **tcp}


class _CallDeadlines:
    """Cuts the connection of a call that outlived its deadline. statement_timeout needs a
    server that still answers, and libpq waits for a reply for ever: a server that hangs, or a
    proxy or pooler in between that stops passing bytes, would hold the call (and the worker
    thread, which cannot be cancelled) for good. Shutting the socket down makes libpq fail the
    call at once. `on_cut` is told first (the pool's other connections, idle ones included, are
    likely as dead: it replaces them, and the cut one is closed when it comes back). A call
    that pages through many statements renews its deadline per page. One thread, alive only
    while calls are under way, looks about once a second."""

    def __init__(self, seconds: float, on_cut: Callable[[], None]) -> None:
        self.seconds = seconds
        self._on_cut = on_cut
        self._lock = threading.Lock()
        # By id(conn) (one call each): the deadline, and the call's own handle on the socket.
        self._calls: dict[int, tuple[float, socket.socket | None]] = {}
        self._watching = False

    @contextmanager
    def bound(self, conn: Connection) -> Iterator[None]:
        with self._lock:
            if id(conn) in self._calls:  # one deadline per call: see `renew`
                raise RuntimeError("this connection's call is already under a deadline")
            if not self._watching:
                threading.Thread(target=self._watch, name="oqronkit deadlines", daemon=True).start()
                self._watching = True  # the thread needs the lock to look: it sees this
            # The socket is taken now, while the call owns the connection: at the deadline,
            # the number libpq holds could name another socket (closed and reused meanwhile).
            self._calls[id(conn)] = (time.monotonic() + self.seconds, _socket_of(conn))
        try:
            yield
        finally:
            with self._lock:  # once out, the connection is never cut for this call
                entry = self._calls.pop(id(conn), None)
            if entry is not None and entry[1] is not None:
                entry[1].close()  # ours only: libpq's own descriptor stays open

    def renew(self, conn: Connection) -> None:
        """The call on `conn` made progress (a page came back): its deadline starts again."""
        with self._lock:
            if id(conn) in self._calls:
                _, sock = self._calls[id(conn)]
                self._calls[id(conn)] = (time.monotonic() + self.seconds, sock)

    def _watch(self) -> None:
        try:
            while True:
                time.sleep(min(1.0, self.seconds))
                with self._lock:
                    if not self._calls:
                        self._watching = False
                        return
                    now = time.monotonic()
                    late = [key for key, (deadline, _) in self._calls.items() if deadline <= now]
                    if late:
                        self._replace_connections()
                    for key in late:
                        _, sock = self._calls.pop(key)
                        if sock is not None:  # shut down under libpq, which then fails the call
                            with sock, suppress(OSError):
                                sock.shutdown(socket.SHUT_RDWR)
        except BaseException:
            with self._lock:
                self._watching = False  # the next call starts another
            raise

    def _replace_connections(self) -> None:
        try:
            self._on_cut()  # takes only the pool's lock, which no holder of ours waits for
        except Exception:  # this thread must go on watching
            log.exception("replacing the PostgreSQL connections failed")


def _socket_of(conn: Connection) -> socket.socket | None:
    """A socket object of our own on the connection's socket (a duplicate descriptor)."""
    try:
        fd = os.dup(conn.pgconn.socket)
    except (OSError, psycopg.Error):  # a connection already lost: nothing to cut
        return None
    try:
        return socket.socket(fileno=fd)
    except OSError:  # not a socket
        os.close(fd)
        return None


def _redacted(conninfo: str) -> str:
    """`conninfo` without any password, for repr and messages."""
    if conninfo.startswith(("postgres://", "postgresql://")):
        return shown_url(conninfo)
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<conninfo>"
    kept = {k: v for k, v in params.items() if k.lower() not in _SECRET_PARAMETERS}
    return make_conninfo("", **kept)


class PostgresBackend(Backend):
    poll_interval = 5.0  # a safety net: `watch` hears of new work at once
    shares_guards = True

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int = 10,
        statement_timeout: float = 30.0,
    ) -> None:
        conninfo, url_schema = _split_url(url)
        if schema is None:
            schema = url_schema if url_schema is not None else DEFAULT_SCHEMA
        if not _SCHEMA_NAME.fullmatch(schema) or schema.lower().startswith("pg_"):
            raise ConfigurationError(
                f"invalid PostgreSQL schema name {schema!r}: use letters, digits and "
                "underscores, not starting with a digit or pg_, at most 63 characters"
            )
        if pool_size < 1:
            raise ConfigurationError(f"pool_size must be at least 1, not {pool_size}")
        if statement_timeout <= 0:
            raise ConfigurationError(f"statement_timeout must be positive, not {statement_timeout}")
        self.schema = schema
        self.pool_size = pool_size
        self.statement_timeout = statement_timeout
        self._conninfo = conninfo
        self._connect_options = _connect_options(conninfo)
        # Each statement has statement_timeout (lock waits included); a call of a few, three
        # times that, for a connection and its answers (pages renew it).
        self._deadlines = _CallDeadlines(3 * statement_timeout, on_cut=self._renew_pool)
        channel = f"oqronkit_{schema}"
        if len(channel) > 63:  # channel names are identifiers: 63 bytes at most
            channel = f"oqronkit_{hashlib.sha256(schema.encode()).hexdigest()[:32]}"
        self._channel = channel
        self._pause_locks = _int4(f"oqronkit pause {schema}")
        self._fire_locks = _int4(f"oqronkit fire {schema}")
        self._migration_lock = _int4(f"oqronkit migrate {schema}")
        self._pool: ConnectionPool[Connection] | None = None
        self._pool_lock = threading.Lock()
        self._migrated = False
        # Limiters belong to one event loop; fire_sync may run the backend on a loop of its own.
        self._limiters: RunVar[anyio.CapacityLimiter] = RunVar("oqronkit_postgres_limiter")

    def __repr__(self) -> str:
        return f"PostgresBackend({_redacted(self._conninfo)!r}, schema={self.schema!r})"

    # ---------------------------------------------------------------- plumbing

    def _configure(self, conn: Connection) -> None:
        # Every statement runs in our schema, and none runs (or waits for a lock) for ever.
        with self._deadlines.bound(conn):
            conn.execute(
                "SELECT set_config('search_path', %s, false), "
                "set_config('statement_timeout', %s, false)",
                (
                    sql.Identifier(self.schema).as_string(conn),
                    str(max(1, round(self.statement_timeout * 1000))),
                ),
            )

    def _open(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                return
            # One connection first, outside the pool: a server that is down or refuses us fails
            # here at once with libpq's reason (the pool would retry until its timeout), and
            # the schema is created or migrated before any pooled connection is used.
            deadline = time.monotonic() + max(30.0, self.statement_timeout)
            while True:
                try:
                    self._connect().close()
                    break
                except psycopg.OperationalError as exc:
                    if _cannot_connect_yet(exc) and time.monotonic() < deadline:
                        time.sleep(0.1)  # a server starting up: worth the wait
                        continue
                    # libpq's reason spans lines ("refused\n\tIs the server running"): one
                    raise psycopg.OperationalError(" ".join(str(exc).split())) from exc
            pool: ConnectionPool[Connection] = ConnectionPool(
                self._conninfo,
                min_size=1,
                max_size=self.pool_size,
                kwargs=self._connect_options,
                configure=self._configure,
                name=f"oqronkit-{self.schema}",
                # A call waits for a connection mostly while the pool reconnects (threads
                # are limited to pool_size per event loop): no longer than it may take.
                timeout=self._deadlines.seconds,
                open=False,
            )
            try:
                pool.open(wait=True, timeout=max(30.0, self.statement_timeout))
            except BaseException:
                pool.close()
                raise
            self._pool = pool

    def _renew_pool(self) -> None:
        """Every connection of the pool replaced: idle ones now, busy ones when they return."""
        pool = self._pool
        if pool is not None:
            log.warning("a PostgreSQL call got no answer in time; replacing every connection")
            pool.drain()

    def _connect(self) -> Connection:
        """A connection outside the pool, set up like the pool's."""
        conn = psycopg.Connection.connect(self._conninfo, **self._connect_options)
        try:
            self._configure(conn)
            if not self._migrated:
                with self._deadlines.bound(conn):
                    self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: Connection) -> None:
        """Creates or updates the schema, one process at a time."""
        schema = sql.Identifier(self.schema)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (self._migration_lock,))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(schema))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] if row and row[0] is not None else 0
            if current > len(MIGRATIONS):
                raise ConfigurationError(
                    f"schema {self.schema!r} is at version {current}, newer than this "
                    f"OqronKit knows ({len(MIGRATIONS)}): upgrade OqronKit"
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(statement)
                    self._deadlines.renew(conn)  # each may take up to statement_timeout
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        self._migrated = True

    def _limiter(self) -> anyio.CapacityLimiter:
        try:
            return self._limiters.get()
        except LookupError:
            limiter = anyio.CapacityLimiter(self.pool_size)
            self._limiters.set(limiter)
            return limiter

    async def _run(self, fn: Callable[[Connection], T]) -> T:
        """Runs `fn` on a pooled connection in a worker thread. No more threads than
        connections (a limiter of its own, so slow sync hooks in anyio's shared pool cannot
        starve claims and settles)."""

        def call() -> T:
            pool = self._pool
            if pool is None:
                # Closed, or not opened yet: a connection of its own for this call (SQLite
                # reconnects lazily too), so nothing is left open.
                with self._connect() as conn, self._deadlines.bound(conn):
                    return fn(conn)
            with pool.connection() as conn, self._deadlines.bound(conn):
                return fn(conn)

        return await anyio.to_thread.run_sync(call, limiter=self._limiter())

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._open)

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self._close)

    def _close(self) -> None:
        with self._pool_lock:  # waits for an open in progress (in a thread: never the loop)
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def unreachable(self, exc: BaseException) -> bool:
        return super().unreachable(exc) or _unreachable(exc)

    async def watch(
        self, wake: Callable[[str], None], ready: Callable[[], None] = lambda: None
    ) -> None:
        conn = await anyio.to_thread.run_sync(self._listen)
        ready()
        limiter = anyio.CapacityLimiter(1)  # its own: never waits behind the pool's work
        # Waiting for notifications never fails on a connection gone silent (a hung server or
        # pooler): a statement now and then, under its deadline, finds out.
        check_every = min(LISTEN_CHECK_INTERVAL, self._deadlines.seconds)
        checked = time.monotonic()
        try:
            while True:
                # A short wait per thread call, so cancellation stops it within a second.
                webhooks = await anyio.to_thread.run_sync(_notified, conn, limiter=limiter)
                for webhook in webhooks:
                    wake(webhook)
                if time.monotonic() - checked >= check_every:
                    await anyio.to_thread.run_sync(self._answers, conn, limiter=limiter)
                    checked = time.monotonic()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(conn.close, limiter=limiter)

    def _answers(self, conn: Connection) -> None:
        with self._deadlines.bound(conn):
            conn.execute("SELECT 1")

    def _listen(self) -> Connection:
        conn = self._connect()
        try:
            with self._deadlines.bound(conn):
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except BaseException:
            conn.close()
            raise
        return conn

    # ---------------------------------------------------------------- the contract

    async def enqueue(
        self,
        messages: Sequence[Message],
        deliveries: Sequence[NewDelivery],
        *,
        idempotency_since: float | None = None,
    ) -> list[str] | None:
        if not messages and not deliveries:
            return None
        keyed: dict[str, list[str]] = {m.id: [] for m in messages if m.idempotency_key}
        if keyed:
            for d in deliveries:
                if d.message_id in keyed:
                    keyed[d.message_id].append(d.id)
        params: dict[str, Any] = {
            "channel": self._channel,
            "m_id": [m.id for m in messages],
            "m_webhook": [m.webhook for m in messages],
            "m_event": [m.event for m in messages],
            "m_body": [m.body for m in messages],
            "m_at": [float(m.created_at) for m in messages],
            "m_key": [m.idempotency_key for m in messages],
            "m_ids": [json.dumps(keyed[m.id]) if m.id in keyed else None for m in messages],
        }
        columns = (
            "id",
            "message_id",
            "webhook",
            "endpoint",
            "event",
            "idempotency_key",
            "created_at",
            "resent_from",
        )
        for i, name in enumerate(columns):
            params[name] = [d[i] for d in deliveries]
        params["created_at"] = [float(at) for at in params["created_at"]]  # one array type
        query = _ENQUEUE
        fire_key: str | None = None
        if idempotency_since is not None and len(messages) == 1 and messages[0].idempotency_key:
            query = _ENQUEUE_IDEMPOTENT
            fire_key = f"{messages[0].webhook}\x1f{messages[0].idempotency_key}"
            params |= {
                "key_webhook": messages[0].webhook,
                "key": messages[0].idempotency_key,
                "since": idempotency_since,
            }
        webhooks = sorted({m.webhook for m in messages} | {d.webhook for d in deliveries})

        def enqueue(conn: Connection) -> list[str] | None:
            with _transaction(conn):
                for webhook in webhooks:  # sorted: no deadlock against another fire
                    conn.execute(_LOCK_SHARED, (self._pause_locks, webhook))
                if fire_key is not None:  # repeats of one fire wait for each other
                    conn.execute(_LOCK_EXCLUSIVE, (self._fire_locks, fire_key))
                cur = conn.execute(query, params)
            row = cur.fetchone()
            return None if row is None or row[0] is None else list(row[0])

        return await self._run(enqueue)

    async def claim(
        self,
        webhook: str,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        room: Mapping[str, int] | None = None,
    ) -> list[Claim]:
        if limit <= 0:
            return []
        # A room of `limit` or more caps nothing: such endpoints take the uncapped path.
        capped = {e: max(0, n) for e, n in (room or {}).items() if n < limit}
        params = {
            "webhook": webhook,
            "owner": owner,
            "now": now,
            "lease_until": lease_until,
            "limit": limit,
            "endpoints": list(capped),
            "rooms": list(capped.values()),
            "channel": self._channel,
        }

        def claim(conn: Connection) -> list[Claim]:
            cur = conn.cursor(binary=True)  # bodies as raw bytes, not hex
            with _transaction(conn):
                conn.execute(_LOCK_SHARED, (self._pause_locks, webhook))  # reclaim reads pauses
                cur.execute(_CLAIM, params)
            return [
                Claim(
                    id=r[0],
                    message_id=r[1],
                    webhook=r[2],
                    endpoint_name=r[3],
                    event=r[4],
                    body=bytes(r[5]),
                    attempts_made=r[6],
                    idempotency_key=r[7],
                    created_at=r[8],
                )
                for r in cur.fetchall()
                if r[0] is not None
            ]

        return await self._run(claim)

    async def next_due(self, webhook: str, skip_endpoints: Collection[str] = ()) -> float | None:
        params = {"webhook": webhook, "skip": list(skip_endpoints)}

        def next_due(conn: Connection) -> float | None:
            row = conn.execute(_NEXT_DUE, params).fetchone()
            return None if row is None else row[0]

        return await self._run(next_due)

    async def renew(self, owner: str, ids: Collection[str], lease_until: float) -> set[str]:
        wanted = list(ids)
        if not wanted:
            return set()

        def renew(conn: Connection) -> set[str]:
            rows = conn.execute(
                "UPDATE deliveries SET lease_until = %s "
                "WHERE id = ANY (%s::text[]) AND status = 'active' AND lease_owner = %s "
                "RETURNING id",
                (lease_until, wanted, owner),
            ).fetchall()
            return {r[0] for r in rows}

        return await self._run(renew)

    async def settle(
        self, delivery_id: str, owner: str, settlement: Settlement, now: float
    ) -> Delivery | None:
        [settled] = await self.settle_many([(delivery_id, owner, settlement, now)])
        return settled

    async def settle_many(self, settles: Sequence[SettleRequest]) -> list[Delivery | None]:
        batch = [
            {
                "id": delivery_id,
                "owner": owner,
                "status": settlement.status,
                "now": now,
                # Requeued ones read pause flags (held if paused): see the lock below.
                "due": (settlement.next_attempt_at or now)
                if settlement.status in ("waiting", "delayed")
                else None,
                "error": settlement.error,
                "attempt": _attempt_json(settlement.attempt) if settlement.attempt else None,
                "channel": self._channel,
            }
            for delivery_id, owner, settlement, now in settles
        ]
        requeued = [p["id"] for p in batch if p["due"] is not None]

        def settle(conn: Connection) -> list[Delivery | None]:
            # One transaction, sent as one batch: the pause locks of the webhooks whose
            # deliveries go back to the queue (in one order, so batches cannot deadlock),
            # then one statement per settle.
            with _transaction(conn):
                if requeued:
                    conn.execute(
                        "SELECT pg_advisory_xact_lock_shared(%s, h) FROM (SELECT DISTINCT "
                        "hashtext(webhook) AS h FROM deliveries WHERE id = ANY (%s)) w ORDER BY h",
                        (self._pause_locks, requeued),
                    )
                cursors = [conn.execute(_SETTLE, params) for params in batch]
            rows = [cursor.fetchone() for cursor in cursors]
            return [_delivery(row) if row else None for row in rows]

        return await self._run(settle)

    async def cancel(self, delivery_id: str, now: float) -> CancelOutcome:
        def cancel(conn: Connection) -> CancelOutcome:
            row = conn.execute(_CANCEL, {"id": delivery_id, "now": now}).fetchone()
            if row is None:
                return "missing"
            if row[0] in ("completed", "dead", "cancelled"):
                return "finished"
            return "requested" if row[0] == "active" else "cancelled"

        return await self._run(cancel)

    async def cancel_requested(self, owner: str, ids: Collection[str]) -> set[str]:
        wanted = list(ids)
        if not wanted:
            return set()

        def select(conn: Connection) -> set[str]:
            rows = conn.execute(
                "SELECT id FROM deliveries WHERE id = ANY (%s::text[]) AND status = 'active' "
                "AND lease_owner = %s AND cancel_requested",
                (wanted, owner),
            ).fetchall()
            return {r[0] for r in rows}

        return await self._run(select)

    async def resend(self, delivery_id: str, new_id: str, now: float) -> Delivery | None:
        params = {"id": delivery_id, "new_id": new_id, "now": now, "channel": self._channel}

        def resend(conn: Connection) -> Delivery | None:
            with _transaction(conn):
                conn.execute(
                    "SELECT pg_advisory_xact_lock_shared(%s, hashtext(webhook)) "
                    "FROM deliveries WHERE id = %s",
                    (self._pause_locks, delivery_id),
                )
                cur = conn.execute(_RESEND, params)
            row = cur.fetchone()
            return _delivery(row) if row else None

        return await self._run(resend)

    async def resent(self, delivery_ids: Sequence[str]) -> set[str]:
        wanted = list(delivery_ids)
        if not wanted:
            return set()

        def select(conn: Connection) -> set[str]:
            rows = conn.execute(
                "SELECT d.id FROM deliveries d WHERE d.id = ANY (%s::text[]) "
                "AND EXISTS (SELECT 1 FROM deliveries n WHERE n.resent_from IS NOT NULL "
                "AND n.message_id = d.message_id AND n.endpoint = d.endpoint AND n.id > d.id)",
                (wanted,),
            ).fetchall()
            return {r[0] for r in rows}

        return await self._run(select)

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        def get(conn: Connection) -> Delivery | None:
            row = conn.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id = %s", (delivery_id,)
            ).fetchone()
            return _delivery(row) if row else None

        return await self._run(get)

    async def list_deliveries(
        self,
        *,
        webhook: str | None = None,
        endpoint: str | None = None,
        status: Status | None = None,
        event: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> list[Delivery]:
        if limit <= 0:
            return []
        where: list[sql.Composable] = []
        args: list[Any] = []
        for column, value in (("webhook", webhook), ("endpoint", endpoint), ("status", status)):
            if value is not None:
                where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                args.append(value)
        if since is not None:
            where.append(sql.SQL("created_at >= %s"))
            args.append(since)
        if until is not None:
            where.append(sql.SQL("created_at < %s"))
            args.append(until)
        # The event glob is the Rust matcher's (the same rules as fan-out), applied here to
        # rows that SQL narrowed down, so pages are fetched until `limit` rows match.
        matches = glob_predicate(event)  # an invalid pattern raises here
        prefilter = None if event is None else _event_prefilter(event)
        if prefilter is not None:
            where.append(sql.SQL(prefilter[0]))
            args.append(prefilter[1])

        def query(after: str | None) -> sql.Composed:
            conditions = [*where, sql.SQL("id < %s")] if after is not None else where
            return sql.SQL("SELECT {} FROM deliveries {} ORDER BY id DESC LIMIT %s").format(
                sql.SQL(_DELIVERY_COLUMNS),
                sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions)
                if conditions
                else sql.SQL(""),
            )

        page = limit if event is None else max(limit, 500)

        def select(conn: Connection) -> list[Delivery]:
            found: list[Delivery] = []
            after = before
            while True:
                cursor_args = () if after is None else (after,)
                rows = conn.execute(query(after), (*args, *cursor_args, page)).fetchall()
                self._deadlines.renew(conn)
                for row in rows:
                    if matches(row[3]):
                        found.append(_delivery(row))
                        if len(found) == limit:
                            return found
                if len(rows) < page:
                    return found
                after = rows[-1][0]

        return await self._run(select)

    # ---------------------------------------------------------------- runtime definitions

    async def definitions(self, known_version: int | None = None) -> Definitions | None:
        def select(conn: Connection) -> Definitions | None:
            # One statement, one snapshot: the rows are those of the version read.
            rows = conn.execute(_DEFINITIONS, {"known": known_version}).fetchall()
            version = rows[0][0]
            if version == known_version:
                return None
            documents: dict[tuple[str, str], Document] = {}
            paused = set()
            for _, webhook, endpoint, document, is_paused in rows:
                if webhook is None:
                    continue  # the version's own row: no definitions at all
                if document is not None:
                    documents[(webhook, endpoint)] = document
                if is_paused:
                    paused.add((webhook, endpoint))
            return Definitions(version, documents, frozenset(paused))

        return await self._run(select)

    async def write_definition(
        self, webhook: str, endpoint: str, changes: Mapping[str, Any] | None, *, replace: bool
    ) -> Document | None:
        params = {
            "webhook": webhook,
            "endpoint": endpoint,
            "replace": replace,
            "changes": None if changes is None else Jsonb(dict(changes)),
            "document": None
            if changes is None
            else Jsonb({k: v for k, v in changes.items() if v is not None}),
        }

        def write(conn: Connection) -> Document | None:
            with _transaction(conn):
                conn.execute(_BUMP_VERSION)  # its row lock orders concurrent writers
                cur = conn.execute(_WRITE_DEFINITION, params)
                conn.execute(_DROP_EMPTY, (webhook, endpoint))
            row = cur.fetchone()
            return None if row is None or row[0] is None else dict(row[0])

        return await self._run(write)

    async def set_paused(self, webhook: str, endpoint: str, paused: bool, now: float) -> int:
        params = {"webhook": webhook, "endpoint": endpoint, "now": now, "channel": self._channel}

        def write(conn: Connection) -> int:
            with _transaction(conn):
                conn.execute(_LOCK_EXCLUSIVE, (self._pause_locks, webhook))
                conn.execute(_BUMP_VERSION)
                conn.execute(_SET_PAUSED, (webhook, endpoint, paused))
                conn.execute(_DROP_EMPTY, (webhook, endpoint))
                cur = conn.execute(_HOLD if paused else _RELEASE, params)
            if paused:
                return max(cur.rowcount, 0)
            row = cur.fetchone()
            return int(row[0]) if row else 0

        return await self._run(write)

    async def release(self, webhook: str, endpoint: str, now: float) -> int:
        params = {"webhook": webhook, "endpoint": endpoint, "now": now, "channel": self._channel}

        def write(conn: Connection) -> int:
            with _transaction(conn):
                conn.execute(_LOCK_EXCLUSIVE, (self._pause_locks, webhook))
                cur = conn.execute(_RELEASE, params)
            row = cur.fetchone()
            return int(row[0]) if row else 0

        return await self._run(write)

    async def discard(self, webhook: str, endpoint: str, now: float, reason: str) -> int:
        params = {"webhook": webhook, "endpoint": endpoint, "now": now, "reason": reason}

        def write(conn: Connection) -> int:
            with _transaction(conn):
                conn.execute(_LOCK_EXCLUSIVE, (self._pause_locks, webhook))
                cur = conn.execute(_DISCARD, params)
            return max(cur.rowcount, 0)

        return await self._run(write)

    async def create_webhook(
        self, webhook: str, documents: Mapping[str, Document], now: float, reason: str
    ) -> bool:
        params = {"webhook": webhook, "endpoint": WEBHOOK, "now": now, "reason": reason}

        def write(conn: Connection) -> bool:
            with _transaction(conn):
                # The webhook's lock orders two creations of one name: the second sees the first.
                conn.execute(_LOCK_EXCLUSIVE, (self._pause_locks, webhook))
                stored = _stored_document(conn, webhook, WEBHOOK)
                if stored is not None and not stored.get(DELETED):
                    return False
                conn.execute(_BUMP_VERSION)
                conn.execute("DELETE FROM definitions WHERE webhook = %s", (webhook,))
                conn.execute(_DISCARD, params)
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO definitions (webhook, endpoint, document) VALUES (%s, %s, %s)",
                        [(webhook, e, Jsonb(dict(doc))) for e, doc in documents.items()],
                    )
            return True

        return await self._run(write)

    async def create_endpoint(
        self, webhook: str, endpoint: str, document: Document, now: float, reason: str
    ) -> bool:
        params = {"webhook": webhook, "endpoint": endpoint, "now": now, "reason": reason}

        def write(conn: Connection) -> bool:
            with _transaction(conn):
                # The webhook's lock orders two creations of one name: the second sees the first.
                conn.execute(_LOCK_EXCLUSIVE, (self._pause_locks, webhook))
                stored = _stored_document(conn, webhook, endpoint)
                if stored is not None and not stored.get(REMOVED):
                    return False
                conn.execute(_BUMP_VERSION)
                if stored is not None:
                    conn.execute(_DISCARD, params)
                conn.execute(
                    "INSERT INTO definitions (webhook, endpoint, document, paused) "
                    "VALUES (%s, %s, %s, false) ON CONFLICT (webhook, endpoint) "
                    "DO UPDATE SET document = excluded.document, paused = false",
                    (webhook, endpoint, Jsonb(dict(document))),
                )
            return True

        return await self._run(write)

    async def delete_webhook(self, webhook: str, now: float, reason: str) -> int:
        params = {"webhook": webhook, "endpoint": WEBHOOK, "now": now, "reason": reason}

        def write(conn: Connection) -> int:
            with _transaction(conn):
                conn.execute(_LOCK_EXCLUSIVE, (self._pause_locks, webhook))
                conn.execute(_BUMP_VERSION)
                conn.execute("DELETE FROM definitions WHERE webhook = %s", (webhook,))
                conn.execute(
                    "INSERT INTO definitions (webhook, endpoint, document, paused) "
                    "VALUES (%s, '', %s, true)",
                    (webhook, Jsonb({DELETED: True})),
                )
                cur = conn.execute(_DISCARD, params)
            return max(cur.rowcount, 0)

        return await self._run(write)

    # ---------------------------------------------------------------- shared guard state

    async def update_state(self, keys: Sequence[str], update: StateUpdate[T]) -> T:
        # Keys may hold NUL (a separator), which PostgreSQL text cannot: escaped, one to one.
        stored_keys = [key.replace("\\", "\\\\").replace("\x00", "\\0") for key in keys]
        unique = sorted(set(stored_keys))

        def write(conn: Connection) -> T:
            with _transaction(conn):
                # A row per key, so that a key nobody stored yet can be locked too; locked in
                # key order, so that two updates of overlapping keys cannot deadlock.
                conn.execute(
                    "INSERT INTO guard_states (key) SELECT unnest(%s::text[]) "
                    "ON CONFLICT (key) DO NOTHING",
                    (unique,),
                )
                found: dict[str, str | None] = dict(
                    conn.execute(
                        "SELECT key, state FROM guard_states WHERE key = ANY (%s::text[]) "
                        'ORDER BY key COLLATE "C" FOR UPDATE',  # the order Python sorted in
                        (unique,),
                    ).fetchall()
                )
                states, result = update([found.get(key) for key in stored_keys])
                stored = dict(zip(stored_keys, states, strict=True))
                conn.execute(
                    "UPDATE guard_states g SET state = s.state "
                    "FROM unnest(%s::text[], %s::text[]) AS s (key, state) WHERE g.key = s.key",
                    (list(stored), list(stored.values())),
                )
            return result

        return await self._run(write)


@contextmanager
def _transaction(conn: Connection) -> Iterator[None]:
    """A transaction sent as one batch (pipeline mode): BEGIN, the statements, COMMIT, and a
    single sync, so one round trip unless a result is read inside. Results are read after."""
    try:
        with conn.pipeline():
            conn.execute("BEGIN")
            yield
            conn.execute("COMMIT")
    except BaseException:
        if conn.info.transaction_status != TransactionStatus.IDLE:
            with suppress(psycopg.Error):  # a broken connection: the pool drops it
                conn.rollback()
        raise


# SQLSTATEs of a server out of reach for now: shutting down (57P01-57P02), starting up
# (57P03), with no connection left to give (53300), or a replica after a failover that has
# not reached this process yet (25006); and class 08, connection exceptions.
_UNREACHABLE_STATES = ("57P01", "57P02", "57P03", "53300", "25006")
# What libpq says (with no SQLSTATE) when a server refuses a connection for good: a password,
# pg_hba.conf, a database or role that does not exist. A misconfiguration, not an outage.
_REFUSED_FOR_GOOD = ("authentication failed", "pg_hba.conf", "does not exist")


def _unreachable(exc: BaseException) -> bool:
    """A lost or failed connection, a server out of reach for now, or no pooled connection in
    time; not a deadlock, a statement timeout, a refused login or any other error of the
    database's."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:  # libpq's own failure: refused, reset, closed, cut at its deadline
        text = str(exc)
        is_libpq = isinstance(exc, psycopg.OperationalError)
        return is_libpq and not any(reason in text for reason in _REFUSED_FOR_GOOD)
    return state.startswith("08") or state in _UNREACHABLE_STATES


def _cannot_connect_yet(error: psycopg.OperationalError) -> bool:
    """Whether the server refused us only for now (SQLSTATE 57P03: starting up, in recovery),
    which libpq reports by message alone."""
    text = str(error)
    return error.sqlstate == "57P03" or any(
        reason in text
        for reason in ("is starting up", "not yet accepting connections", "in recovery mode")
    )


def _notified(conn: Connection) -> list[str]:
    """The webhooks notified within about half a second (as soon as one is)."""
    webhooks: list[str] = []
    for notify in conn.notifies(timeout=0.5, stop_after=1):
        if notify.payload not in webhooks:
            webhooks.append(notify.payload)
    return webhooks


def _stored_document(conn: Connection, webhook: str, endpoint: str) -> Document | None:
    row = conn.execute(
        "SELECT document FROM definitions WHERE webhook = %s AND endpoint = %s", (webhook, endpoint)
    ).fetchone()
    return None if row is None or row[0] is None else dict(row[0])
