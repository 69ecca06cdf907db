"""`sqlite:///path.db`: the embedded durable default for one machine.

Stdlib `sqlite3` in WAL mode. One connection, used by one thread at a time: every operation is
a synchronous function run in a worker thread through anyio, under a lock that serialises them.
The queue is the deliveries table itself (status + due time), so a state change and its queue
entry are one row in one transaction, and a `kill -9` leaves every delivery either queued or
finished. Several processes may share the file (WAL allows one writer at a time; the busy
timeout makes the others wait).
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import anyio
from anyio.lowlevel import RunVar

from oqronkit.backends.base import Backend, SettleRequest, StateUpdate, glob_predicate
from oqronkit.models import (
    CANCELLED,
    DELETED,
    REMOVED,
    TERMINAL,
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

P = ParamSpec("P")
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    webhook TEXT NOT NULL,
    event TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    idempotency_key TEXT,
    delivery_ids TEXT  -- JSON list, kept only for fires with an idempotency key (repeats)
);
CREATE INDEX IF NOT EXISTS messages_fire_key ON messages (webhook, idempotency_key, created_at)
    WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL REFERENCES messages (id),
    webhook TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    event TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts TEXT NOT NULL DEFAULT '[]',
    attempts_made INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    idempotency_key TEXT NOT NULL,
    next_attempt_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    resent_from TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_ready ON deliveries (webhook, status, next_attempt_at);
-- Resent copies by message and endpoint (replay skips what was resent); fires add no entry.
CREATE INDEX IF NOT EXISTS deliveries_resends ON deliveries (message_id, endpoint, id)
    WHERE resent_from IS NOT NULL;
CREATE TABLE IF NOT EXISTS definitions (
    webhook TEXT NOT NULL,
    endpoint TEXT NOT NULL,  -- '' for the webhook itself
    document TEXT,           -- JSON; NULL when only the pause flag is stored
    paused INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (webhook, endpoint)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS definitions_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT OR IGNORE INTO definitions_version VALUES (1, 0);
CREATE TABLE IF NOT EXISTS guard_states (
    key TEXT PRIMARY KEY,
    state TEXT NOT NULL  -- a breaker or bucket snapshot, as JSON
) WITHOUT ROWID;
"""

# Whether the delivery row in scope (`deliveries`) is under a pause of its webhook or endpoint.
_PAUSED = (
    "EXISTS (SELECT 1 FROM definitions p WHERE p.paused = 1 "
    "AND p.webhook = deliveries.webhook AND p.endpoint IN ('', deliveries.endpoint))"
)
_HELD_IF_PAUSED = f"CASE WHEN {_PAUSED} THEN 'held' ELSE 'waiting' END"

_DELIVERY_COLUMNS = (
    "id, webhook, endpoint, event, status, attempts, error, idempotency_key, next_attempt_at, "
    "created_at, updated_at, message_id, resent_from"
)


def _delivery(row: sqlite3.Row) -> Delivery:
    return Delivery(
        id=row["id"],
        webhook=row["webhook"],
        endpoint_name=row["endpoint"],
        event=row["event"],
        status=row["status"],
        attempts=tuple(Attempt(**a) for a in json.loads(row["attempts"])),
        error=row["error"],
        idempotency_key=row["idempotency_key"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        message_id=row["message_id"],
        resent_from=row["resent_from"],
    )


@functools.lru_cache(maxsize=64)
def _compiled_glob(pattern: str) -> Callable[[str], bool]:
    return glob_predicate(pattern)


def _glob(pattern: str, event: str) -> bool:
    """`oqron_glob(pattern, event)` in SQL: the same rules as fan-out."""
    return _compiled_glob(pattern)(event)


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


def _choose(
    conn: sqlite3.Connection, webhook: str, now: float, limit: int, left: dict[str, int]
) -> list[str]:
    """Ids of up to `limit` ready deliveries, earliest first, within each endpoint's room.

    One query usually suffices; when an endpoint fills up mid-batch, the next query leaves it
    out, so there are at most as many rounds as endpoints that fill."""
    chosen: list[str] = []
    taken: set[str] = set()
    full = {endpoint for endpoint, n in left.items() if n <= 0}
    while len(chosen) < limit:
        skip, asked = list(full), limit + len(taken)
        rows = conn.execute(
            "SELECT id, endpoint FROM deliveries WHERE webhook = ? "
            "AND status IN ('waiting', 'delayed') AND next_attempt_at <= ? "
            f"AND endpoint NOT IN ({','.join('?' * len(skip))}) "
            "ORDER BY next_attempt_at LIMIT ?",
            (webhook, now, *skip, asked),
        ).fetchall()
        filled = False
        for delivery_id, endpoint in rows:
            if delivery_id in taken or endpoint in full:
                continue
            chosen.append(delivery_id)
            taken.add(delivery_id)
            if endpoint in left:
                left[endpoint] -= 1
                if left[endpoint] <= 0:
                    full.add(endpoint)
                    filled = True
            if len(chosen) == limit:
                break
        if not filled or len(rows) < asked:
            break
    return chosen


# Another process holding the write lock: SQLite's own busy wait (in a worker thread, where no
# cancellation reaches it, nor `interrupt`) is kept short, and the rest of the wait is a sleep
# here between tries, which a shutdown or a caller's timeout cuts short.
BUSY_WAIT = 0.05  # seconds SQLite waits for a lock per try
LOCK_RETRY = 0.02  # seconds between tries
LOCK_PATIENCE = 30.0  # seconds of tries before "database is locked" is raised
_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})

# Limiters belong to one event loop; fire_sync may run the backend on a loop of its own.
_LIMITER: RunVar[anyio.CapacityLimiter] = RunVar("oqronkit_sqlite_limiter")


def _limiter() -> anyio.CapacityLimiter:
    try:
        return _LIMITER.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(1)
        _LIMITER.set(limiter)
        return limiter


class SQLiteBackend(Backend):
    poll_interval = 0.5  # other processes may add work to the same file

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.path!r})"

    # ---------------------------------------------------------------- plumbing

    def _connect(self) -> sqlite3.Connection:
        with self._lock:
            if self._conn is None:
                if self.path != ":memory:":
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_WAIT
                )
                try:
                    conn.row_factory = sqlite3.Row
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: safe across kill -9
                    conn.execute("PRAGMA foreign_keys=ON")
                    conn.execute("PRAGMA cache_size=-65536")  # 64 MiB: index updates in memory
                    # Checkpoint every ~40 MiB of log, not 4: a queue rewrites the same pages
                    # (the tail of the id index, the ready index) in every transaction, and a
                    # page is copied into the database once per checkpoint however often it
                    # changed.
                    conn.execute("PRAGMA wal_autocheckpoint=10000")
                    conn.executescript(SCHEMA)
                    conn.create_function("oqron_glob", 2, _glob, deterministic=True)
                except BaseException:  # locked, say: the next try starts afresh
                    conn.close()
                    raise
                self._conn = conn
            return self._conn

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Runs `fn` in one immediate transaction (holding the write lock from the start)."""
        conn = self._connect()
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # a COMMIT that failed (busy) leaves it open too
                    conn.execute("ROLLBACK")
                raise
            return result

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connect()
        with self._lock:
            return fn(conn)

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        # One worker thread at a time for SQLite in this event loop (the lock serialises calls on
        # the connection anyway), with a limiter of its own so slow sync hooks in anyio's shared
        # pool cannot starve claims and settles. Every call is a transaction or a read, which a
        # lock held elsewhere leaves undone: tried again until LOCK_PATIENCE runs out.
        give_up: float | None = None
        while True:
            try:
                return await anyio.to_thread.run_sync(
                    lambda: fn(*args, **kwargs), limiter=_limiter()
                )
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF not in _BUSY:
                    raise
                now = anyio.current_time()
                give_up = give_up or now + LOCK_PATIENCE
                if now >= give_up:
                    raise
            await anyio.sleep(LOCK_RETRY)

    async def open(self) -> None:
        await self._run(self._connect)

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await self._run(close)

    # ---------------------------------------------------------------- the contract

    async def enqueue(
        self,
        messages: Sequence[Message],
        deliveries: Sequence[NewDelivery],
        *,
        idempotency_since: float | None = None,
    ) -> list[str] | None:
        def enqueue(conn: sqlite3.Connection) -> list[str] | None:
            if idempotency_since is not None and len(messages) == 1:
                m = messages[0]
                earlier = conn.execute(
                    "SELECT delivery_ids FROM messages WHERE webhook = ? AND idempotency_key = ? "
                    "AND created_at >= ? ORDER BY created_at DESC LIMIT 1",
                    (m.webhook, m.idempotency_key, idempotency_since),
                ).fetchone()
                if earlier is not None:
                    return list(json.loads(earlier[0]))
            keyed: dict[str, list[str]] = {m.id: [] for m in messages if m.idempotency_key}
            if keyed:
                for d in deliveries:
                    if d.message_id in keyed:
                        keyed[d.message_id].append(d.id)
            conn.executemany(
                "INSERT INTO messages (id, webhook, event, body, created_at, idempotency_key, "
                "delivery_ids) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*m, json.dumps(keyed[m.id]) if m.id in keyed else None) for m in messages],
            )
            # Numbered parameters read each NewDelivery tuple as it is: no per-row repacking.
            insert = (
                "INSERT INTO deliveries (id, message_id, webhook, endpoint, event, status, "
                "idempotency_key, next_attempt_at, created_at, updated_at, resent_from) "
                "VALUES (?1, ?2, ?3, ?4, ?5, '{}', ?6, ?7, ?7, ?7, ?8)"
            )
            paused = _paused(conn, {m.webhook for m in messages})
            if not paused:
                conn.executemany(insert.format("waiting"), deliveries)
                return None
            held = {
                d.id
                for d in deliveries
                if (d.webhook, WEBHOOK) in paused or (d.webhook, d.endpoint_name) in paused
            }
            conn.executemany(insert.format("waiting"), [d for d in deliveries if d.id not in held])
            conn.executemany(insert.format("held"), [d for d in deliveries if d.id in held])
            return None

        return await self._run(self._write, enqueue)

    async def claim(
        self,
        webhook: str,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        room: Mapping[str, int] | None = None,
    ) -> list[Claim]:
        def claim(conn: sqlite3.Connection) -> list[Claim]:
            # Expired leases: queued again, or cancelled if that was asked.
            conn.execute(
                "UPDATE deliveries SET "
                f"status = CASE WHEN cancel_requested THEN 'cancelled' ELSE {_HELD_IF_PAUSED} END, "
                "next_attempt_at = CASE WHEN cancel_requested THEN NULL ELSE ? END, "
                "updated_at = ?, lease_owner = NULL, lease_until = NULL, cancel_requested = 0 "
                "WHERE webhook = ? AND status = 'active' AND lease_until <= ?",
                (now, now, webhook, now),
            )
            chosen = _choose(conn, webhook, now, limit, dict(room or {}))
            if not chosen:
                return []
            marks = ",".join("?" * len(chosen))
            rows = conn.execute(
                f"""
                UPDATE deliveries
                SET status = 'active', lease_owner = ?, lease_until = ?, updated_at = ?
                WHERE id IN ({marks})
                RETURNING id, message_id, webhook, endpoint, event, attempts_made,
                          idempotency_key, created_at
                """,
                (owner, lease_until, now, *chosen),
            ).fetchall()
            message_ids = list({r["message_id"] for r in rows})
            marks = ",".join("?" * len(message_ids))
            bodies = dict(
                conn.execute(f"SELECT id, body FROM messages WHERE id IN ({marks})", message_ids)
            )
            order = {delivery_id: i for i, delivery_id in enumerate(chosen)}
            return [
                Claim(
                    id=r["id"],
                    message_id=r["message_id"],
                    webhook=r["webhook"],
                    endpoint_name=r["endpoint"],
                    event=r["event"],
                    body=bodies[r["message_id"]],
                    attempts_made=r["attempts_made"],
                    idempotency_key=r["idempotency_key"],
                    created_at=r["created_at"],
                )
                for r in sorted(rows, key=lambda r: order[r["id"]])
            ]

        return await self._run(self._write, claim)

    async def next_due(self, webhook: str, skip_endpoints: Collection[str] = ()) -> float | None:
        skip = list(skip_endpoints)
        skip_sql = f"AND endpoint NOT IN ({','.join('?' * len(skip))})" if skip else ""

        def next_due(conn: sqlite3.Connection) -> float | None:
            row = conn.execute(
                f"""
                SELECT MIN(t) FROM (
                    SELECT MIN(next_attempt_at) AS t FROM deliveries
                    WHERE webhook = ? AND status IN ('waiting', 'delayed') {skip_sql}
                    UNION ALL
                    SELECT MIN(lease_until) FROM deliveries WHERE webhook = ? AND status = 'active')
                """,
                (webhook, *skip, webhook),
            ).fetchone()
            return row[0] if row else None

        return await self._run(self._read, next_due)

    async def renew(self, owner: str, ids: Collection[str], lease_until: float) -> set[str]:
        wanted = list(ids)
        if not wanted:
            return set()

        def renew(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute(
                "UPDATE deliveries SET lease_until = ? "
                "WHERE status = 'active' AND lease_owner = ? "
                f"AND id IN ({','.join('?' * len(wanted))}) RETURNING id",
                (lease_until, owner, *wanted),
            ).fetchall()
            return {r[0] for r in rows}

        return await self._run(self._write, renew)

    async def settle(
        self, delivery_id: str, owner: str, settlement: Settlement, now: float
    ) -> Delivery | None:
        [settled] = await self.settle_many([(delivery_id, owner, settlement, now)])
        return settled

    async def settle_many(self, settles: Sequence[SettleRequest]) -> list[Delivery | None]:
        def settle_all(conn: sqlite3.Connection) -> list[Delivery | None]:
            return [_settle(conn, *request) for request in settles]

        # One transaction, one trip to the writer thread, for the whole batch.
        return await self._run(self._write, settle_all)

    async def cancel(self, delivery_id: str, now: float) -> CancelOutcome:
        def cancel(conn: sqlite3.Connection) -> CancelOutcome:
            row = conn.execute(
                "SELECT status, lease_until FROM deliveries WHERE id = ?", (delivery_id,)
            )
            found = row.fetchone()
            if found is None:
                return "missing"
            status, lease_until = found
            if status in TERMINAL:
                return "finished"
            if status == "active" and lease_until is not None and lease_until > now:
                # (an active one whose lease ran out lost its worker: cancelled below)
                conn.execute(
                    "UPDATE deliveries SET cancel_requested = 1 WHERE id = ?", (delivery_id,)
                )
                return "requested"
            conn.execute(
                "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, "
                "updated_at = ?, lease_owner = NULL, lease_until = NULL, cancel_requested = 0 "
                "WHERE id = ?",
                (now, delivery_id),
            )
            return "cancelled"

        return await self._run(self._write, cancel)

    async def cancel_requested(self, owner: str, ids: Collection[str]) -> set[str]:
        wanted = list(ids)
        if not wanted:
            return set()

        def select(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute(
                "SELECT id FROM deliveries WHERE status = 'active' AND lease_owner = ? "
                f"AND cancel_requested = 1 AND id IN ({','.join('?' * len(wanted))})",
                (owner, *wanted),
            )
            return {r[0] for r in rows}

        return await self._run(self._read, select)

    async def resend(self, delivery_id: str, new_id: str, now: float) -> Delivery | None:
        def resend(conn: sqlite3.Connection) -> Delivery | None:
            row = conn.execute(
                "INSERT INTO deliveries (id, message_id, webhook, endpoint, event, status, "
                "idempotency_key, next_attempt_at, created_at, updated_at, resent_from) "
                f"SELECT ?, message_id, webhook, endpoint, event, "
                f"{_HELD_IF_PAUSED}, idempotency_key, "
                "?, ?, ?, id FROM deliveries "
                "WHERE id = ? AND status IN ('completed', 'dead', 'cancelled') "
                "RETURNING " + _DELIVERY_COLUMNS,
                (new_id, now, now, now, delivery_id),
            ).fetchone()
            return _delivery(row) if row else None

        return await self._run(self._write, resend)

    async def resent(self, delivery_ids: Sequence[str]) -> set[str]:
        wanted = list(delivery_ids)
        if not wanted:
            return set()

        def select(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute(
                f"SELECT d.id FROM deliveries d WHERE d.id IN ({','.join('?' * len(wanted))}) "
                "AND EXISTS (SELECT 1 FROM deliveries n WHERE n.resent_from IS NOT NULL "
                "AND n.message_id = d.message_id AND n.endpoint = d.endpoint AND n.id > d.id)",
                wanted,
            )
            return {r[0] for r in rows}

        return await self._run(self._read, select)

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        def get(conn: sqlite3.Connection) -> Delivery | None:
            row = conn.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,)
            ).fetchone()
            return _delivery(row) if row else None

        return await self._run(self._read, get)

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
        where: list[str] = []
        args: list[str | float] = []
        for column, value in (("webhook", webhook), ("endpoint", endpoint), ("status", status)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if before is not None:
            where.append("id < ?")
            args.append(before)
        if since is not None:
            where.append("created_at >= ?")
            args.append(since)
        if until is not None:
            where.append("created_at < ?")
            args.append(until)
        if event is not None:
            glob_predicate(event)  # an invalid pattern raises here, not inside SQLite
            where.append("oqron_glob(?, event)")
            args.append(event)
        sql = f"SELECT {_DELIVERY_COLUMNS} FROM deliveries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"

        def select(conn: sqlite3.Connection) -> list[Delivery]:
            return [_delivery(r) for r in conn.execute(sql, (*args, limit))]

        return await self._run(self._read, select)

    # ---------------------------------------------------------------- runtime definitions

    async def definitions(self, known_version: int | None = None) -> Definitions | None:
        def select(conn: sqlite3.Connection) -> Definitions | None:
            (version,) = conn.execute("SELECT version FROM definitions_version").fetchone()
            if version == known_version:
                return None
            documents: dict[tuple[str, str], Document] = {}
            paused = set()
            for webhook, endpoint, document, is_paused in conn.execute(
                "SELECT webhook, endpoint, document, paused FROM definitions"
            ):
                if document is not None:
                    documents[(webhook, endpoint)] = json.loads(document)
                if is_paused:
                    paused.add((webhook, endpoint))
            return Definitions(version, documents, frozenset(paused))

        # The version is read first, so the rows are at least that new: at worst the next call
        # reloads rows it already has.
        return await self._run(self._read, select)

    async def write_definition(
        self, webhook: str, endpoint: str, changes: Mapping[str, Any] | None, *, replace: bool
    ) -> Document | None:
        def write(conn: sqlite3.Connection) -> Document | None:
            _bump_version(conn)
            stored = _stored_document(conn, webhook, endpoint)
            document: dict[str, Any] | None = None
            if changes is not None:
                merged = {} if replace or stored is None else dict(stored)
                merged.update(changes)
                document = {k: v for k, v in merged.items() if v is not None}
            conn.execute(
                "INSERT INTO definitions (webhook, endpoint, document) VALUES (?, ?, ?) "
                "ON CONFLICT (webhook, endpoint) DO UPDATE SET document = excluded.document",
                (webhook, endpoint, None if document is None else json.dumps(document)),
            )
            _drop_empty(conn)
            return document

        return await self._run(self._write, write)

    async def set_paused(self, webhook: str, endpoint: str, paused: bool, now: float) -> int:
        def write(conn: sqlite3.Connection) -> int:
            _bump_version(conn)
            conn.execute(
                "INSERT INTO definitions (webhook, endpoint, paused) VALUES (?, ?, ?) "
                "ON CONFLICT (webhook, endpoint) DO UPDATE SET paused = excluded.paused",
                (webhook, endpoint, int(paused)),
            )
            _drop_empty(conn)
            if paused:
                return _hold(conn, webhook, endpoint, now)
            return _release(conn, webhook, endpoint, now)

        return await self._run(self._write, write)

    async def release(self, webhook: str, endpoint: str, now: float) -> int:
        return await self._run(self._write, lambda conn: _release(conn, webhook, endpoint, now))

    async def discard(self, webhook: str, endpoint: str, now: float, reason: str) -> int:
        return await self._run(
            self._write, lambda conn: _discard(conn, webhook, endpoint, now, reason)
        )

    async def create_webhook(
        self, webhook: str, documents: Mapping[str, Document], now: float, reason: str
    ) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            stored = _stored_document(conn, webhook, WEBHOOK)
            if stored is not None and not stored.get(DELETED):
                return False
            _bump_version(conn)
            conn.execute("DELETE FROM definitions WHERE webhook = ?", (webhook,))
            _discard(conn, webhook, WEBHOOK, now, reason)
            conn.executemany(
                "INSERT INTO definitions (webhook, endpoint, document) VALUES (?, ?, ?)",
                [(webhook, endpoint, json.dumps(doc)) for endpoint, doc in documents.items()],
            )
            return True

        return await self._run(self._write, write)

    async def create_endpoint(
        self, webhook: str, endpoint: str, document: Document, now: float, reason: str
    ) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            stored = _stored_document(conn, webhook, endpoint)
            if stored is not None and not stored.get(REMOVED):
                return False
            _bump_version(conn)
            if stored is not None:
                _discard(conn, webhook, endpoint, now, reason)
            conn.execute(
                "INSERT INTO definitions (webhook, endpoint, document, paused) VALUES (?, ?, ?, 0) "
                "ON CONFLICT (webhook, endpoint) DO UPDATE SET document = excluded.document, "
                "paused = 0",
                (webhook, endpoint, json.dumps(dict(document))),
            )
            return True

        return await self._run(self._write, write)

    async def delete_webhook(self, webhook: str, now: float, reason: str) -> int:
        def write(conn: sqlite3.Connection) -> int:
            _bump_version(conn)
            conn.execute("DELETE FROM definitions WHERE webhook = ?", (webhook,))
            conn.execute(
                "INSERT INTO definitions (webhook, endpoint, document, paused) "
                "VALUES (?, '', ?, 1)",
                (webhook, json.dumps({DELETED: True})),
            )
            return _discard(conn, webhook, WEBHOOK, now, reason)

        return await self._run(self._write, write)

    async def update_state(self, keys: Sequence[str], update: StateUpdate[T]) -> T:
        def write(conn: sqlite3.Connection) -> T:
            marks = ",".join("?" * len(keys))
            query = f"SELECT key, state FROM guard_states WHERE key IN ({marks})"
            found = dict(conn.execute(query, list(keys)).fetchall())
            states, result = update([found.get(key) for key in keys])
            conn.executemany(
                "INSERT INTO guard_states (key, state) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET state = excluded.state",
                list(zip(keys, states, strict=True)),
            )
            return result

        return await self._run(self._write, write)


def _stored_document(conn: sqlite3.Connection, webhook: str, endpoint: str) -> Document | None:
    row = conn.execute(
        "SELECT document FROM definitions WHERE webhook = ? AND endpoint = ?", (webhook, endpoint)
    ).fetchone()
    return None if row is None or row[0] is None else dict(json.loads(row[0]))


def _settle(
    conn: sqlite3.Connection, delivery_id: str, owner: str, settlement: Settlement, now: float
) -> Delivery | None:
    if settlement.status in ("waiting", "delayed"):
        due: float | None = settlement.next_attempt_at or now
    else:  # held keeps its schedule for its release; finished ones have none
        due = None
    attempt = _attempt_json(settlement.attempt) if settlement.attempt else None
    # A cancel asked while the attempt ran wins over anything but a delivery (SET reads the old
    # row): a failed last attempt ends cancelled, not dead.
    cancel_wins = "(cancel_requested AND :status NOT IN ('completed', 'cancelled'))"
    row = conn.execute(
        f"""
        UPDATE deliveries SET
            status = CASE WHEN {cancel_wins} THEN 'cancelled'
                          WHEN :status IN ('waiting', 'delayed') AND {_PAUSED} THEN 'held'
                          ELSE :status END,
            updated_at = :now,
            next_attempt_at = CASE WHEN {cancel_wins} THEN NULL
                                   WHEN :status = 'held' THEN next_attempt_at ELSE :due END,
            error = CASE WHEN {cancel_wins} THEN :cancelled
                         WHEN :status = 'completed' THEN NULL  -- failures stay in attempts
                         ELSE COALESCE(:error, error) END,
            attempts = CASE WHEN :attempt IS NULL THEN attempts
                            ELSE json_insert(attempts, '$[#]', json(:attempt)) END,
            attempts_made = attempts_made + (:attempt IS NOT NULL),
            lease_owner = NULL, lease_until = NULL, cancel_requested = 0
        WHERE id = :id AND status = 'active' AND lease_owner = :owner
        RETURNING {_DELIVERY_COLUMNS}""",
        {
            "status": settlement.status,
            "now": now,
            "due": due,
            "error": settlement.error,
            "cancelled": CANCELLED.error,
            "attempt": attempt,
            "id": delivery_id,
            "owner": owner,
        },
    ).fetchone()
    return _delivery(row) if row else None


def _paused(conn: sqlite3.Connection, webhooks: Collection[str]) -> set[tuple[str, str]]:
    """The pause flags set on `webhooks` and their endpoints."""
    marks = ",".join("?" * len(webhooks))
    return {
        (w, e)
        for w, e in conn.execute(
            f"SELECT webhook, endpoint FROM definitions WHERE paused = 1 AND webhook IN ({marks})",
            list(webhooks),
        )
    }


def _scope(webhook: str, endpoint: str) -> tuple[str, tuple[str, ...]]:
    """SQL (after `WHERE webhook = ?`) and arguments for a webhook or one of its endpoints."""
    if endpoint == WEBHOOK:
        return "", (webhook,)
    return "AND endpoint = ?", (webhook, endpoint)


def _hold(conn: sqlite3.Connection, webhook: str, endpoint: str, now: float) -> int:
    which, args = _scope(webhook, endpoint)
    return conn.execute(
        "UPDATE deliveries SET status = 'held', updated_at = ? "
        f"WHERE webhook = ? AND status IN ('waiting', 'delayed') {which}",
        (now, *args),
    ).rowcount


def _discard(conn: sqlite3.Connection, webhook: str, endpoint: str, now: float, reason: str) -> int:
    which, args = _scope(webhook, endpoint)
    active = conn.execute(  # their workers stop the attempts
        "UPDATE deliveries SET cancel_requested = 1 "
        f"WHERE webhook = ? AND status = 'active' {which}",
        args,
    ).rowcount
    queued = conn.execute(
        "UPDATE deliveries SET status = 'cancelled', error = ?, next_attempt_at = NULL, "
        f"updated_at = ? WHERE webhook = ? AND status IN ('waiting', 'delayed', 'held') {which}",
        (reason, now, *args),
    ).rowcount
    return active + queued


def _release(conn: sqlite3.Connection, webhook: str, endpoint: str, now: float) -> int:
    which, args = _scope(webhook, endpoint)
    return conn.execute(
        "UPDATE deliveries SET updated_at = ?, status = CASE WHEN next_attempt_at > ? "
        "THEN 'delayed' ELSE 'waiting' END, next_attempt_at = COALESCE(next_attempt_at, ?) "
        f"WHERE webhook = ? AND status = 'held' {which} AND NOT {_PAUSED}",
        (now, now, now, *args),
    ).rowcount


def _bump_version(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE definitions_version SET version = version + 1")


def _drop_empty(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM definitions WHERE document IS NULL AND paused = 0")
