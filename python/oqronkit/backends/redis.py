"""`redis://host:port/db?prefix=name` (or `rediss://` for TLS): many workers on many machines.

Every command answers within 10 seconds or fails (`TimeoutError`, or coredis's
`ConnectionError` for a connection attempt; the URL's `stream_timeout=` and `connect_timeout=`
change the 10 s): a server that stops answering, or a connection silently cut (a failover, a
dropped route), fails calls instead of hanging them, and the client that saw it is replaced by
a fresh one with new connections.

`coredis` (anyio-native: runs on asyncio and Trio). Every state change of a delivery and its
queue entries is one Lua script, so it is atomic for every process using the server. Keys, all
under `{prefix}:` (W a webhook, E an endpoint, WE the pair as one unambiguous string):

- `m:<id>` hash: a message (webhook, event, body, created_at, idempotency key);
  `mk:<id>` list: the delivery ids of a message fired with a key (its repeats return them);
  `k:<W,key>`: the latest message fired with that key;
- `d:<id>` hash: a delivery (attempts as a JSON list, lease owner and expiry, cancel flag);
- `q:<WE>` sorted set: the queued deliveries of an endpoint, by due time (so a full endpoint
  is skipped without scanning it); `h:<WE>` set: its held ones; `e:<W>` set: the endpoints of a
  webhook that have queued or held ones; `l:<W>` sorted set: active ones, by lease expiry;
- `i` and `i:<W>` sorted sets (all scores 0): every delivery id, in id (creation) order, for
  listing newest first;
- `def:<WE>` hash: a definition document, one JSON value per top-level key (so merging needs
  no JSON in Lua); `defs` set: the pairs that have a document; `paused` set; `version`;
- `g:<key>`: a shared guard state (breaker or bucket snapshot);
- channel `wake`: the webhooks whose deliveries became ready now.

Times are passed to Lua as `repr()` strings and stored as given (Lua turns numbers into
strings with 14 digits), so they come back exactly.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import coredis
import sniffio
import trio
from coredis.commands.script import Script
from coredis.retry import NoRetryPolicy

from oqronkit.backends.base import (
    Backend,
    SettleRequest,
    StateUpdate,
    T,
    glob_predicate,
)
from oqronkit.errors import KitNotRunning, describe, shown_url
from oqronkit.models import (
    DELETED,
    REMOVED,
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

log = logging.getLogger(__name__)

#: Seconds a command may wait for its answer (and a connection to open), unless the URL says.
DEFAULT_TIMEOUT = 10.0

Client = coredis.Redis[bytes]
Arg = str | bytes

# ---------------------------------------------------------------- Lua

# Shared by every script: ARGV[1] is the key prefix (with its colon).
_PRELUDE = """
local P = ARGV[1]
-- A (webhook, endpoint) pair as one string: names may hold ':', the length keeps it unique.
local function pair(w, e) return #w .. ':' .. w .. ':' .. e end
local function dkey(id) return P .. 'd:' .. id end
local function qkey(w, e) return P .. 'q:' .. pair(w, e) end
local function hkey(w, e) return P .. 'h:' .. pair(w, e) end
local function ekey(w) return P .. 'e:' .. w end
local function lkey(w) return P .. 'l:' .. w end
local function wake(w) redis.call('PUBLISH', P .. 'wake', w) end
local function is_paused(w, e)
  local paused = P .. 'paused'
  return redis.call('SISMEMBER', paused, pair(w, '')) == 1
    or redis.call('SISMEMBER', paused, pair(w, e)) == 1
end
local function terminal(s) return s == 'completed' or s == 'dead' or s == 'cancelled' end
-- Queues a delivery due at `due` (a time string, stored as given), or holds it there while
-- it is paused. Returns whether it was queued.
local function requeue(id, w, e, due, now, status)
  local d = dkey(id)
  redis.call('SADD', ekey(w), e)
  redis.call('HDEL', d, 'o')
  if is_paused(w, e) then
    redis.call('HSET', d, 's', 'held', 'n', due, 'u', now)
    redis.call('SADD', hkey(w, e), id)
    return false
  end
  redis.call('HSET', d, 's', status, 'n', due, 'u', now)
  redis.call('ZADD', qkey(w, e), due, id)
  return true
end
-- Cancels a delivery that is in no queue, held set or lease set (the caller took it out).
local function cancel(id, now)
  local d = dkey(id)
  redis.call('HSET', d, 's', 'cancelled', 'u', now)
  redis.call('HDEL', d, 'n', 'o', 'x')
end
-- The endpoints a webhook-wide (e == '') or endpoint operation covers.
local function scope(w, e)
  if e == '' then return redis.call('SMEMBERS', ekey(w)) end
  return {e}
end
-- Holds every queued delivery in scope; returns how many.
local function hold(w, e, now)
  local n = 0
  for _, ep in ipairs(scope(w, e)) do
    local q, h = qkey(w, ep), hkey(w, ep)
    local ids = redis.call('ZRANGE', q, 0, -1)
    for _, id in ipairs(ids) do
      redis.call('HSET', dkey(id), 's', 'held', 'u', now)
      redis.call('SADD', h, id)
    end
    redis.call('DEL', q)
    n = n + #ids
  end
  return n
end
-- Cancels every unfinished delivery in scope: queued and held ones with `reason` as their
-- error, active ones as `cancel` does (their workers stop the attempts). Returns how many.
local function discard(w, e, now, reason)
  local n = 0
  for _, id in ipairs(redis.call('ZRANGE', lkey(w), 0, -1)) do
    if e == '' or redis.call('HGET', dkey(id), 'e') == e then
      redis.call('HSET', dkey(id), 'x', '1')
      n = n + 1
    end
  end
  for _, ep in ipairs(scope(w, e)) do
    local q, h = qkey(w, ep), hkey(w, ep)
    for _, ids in ipairs({redis.call('ZRANGE', q, 0, -1), redis.call('SMEMBERS', h)}) do
      for _, id in ipairs(ids) do
        cancel(id, now)
        redis.call('HSET', dkey(id), 'err', reason)
      end
      n = n + #ids
    end
    redis.call('DEL', q, h)
  end
  return n
end
-- Removes a webhook's definitions and pause flags, its endpoints' too: `own` is its pair,
-- the start of every pair of its endpoints.
local function forget(own)
  local function mine(p) return string.sub(p, 1, #own) == own end
  for _, p in ipairs(redis.call('SMEMBERS', P .. 'defs')) do
    if mine(p) then
      redis.call('DEL', P .. 'def:' .. p)
      redis.call('SREM', P .. 'defs', p)
    end
  end
  for _, p in ipairs(redis.call('SMEMBERS', P .. 'paused')) do
    if mine(p) then redis.call('SREM', P .. 'paused', p) end
  end
end
-- Queues every held delivery in scope that no pause holds, due when it was due.
local function release(w, e, now)
  local n, ready = 0, false
  for _, ep in ipairs(scope(w, e)) do
    if not is_paused(w, ep) then
      local h, q = hkey(w, ep), qkey(w, ep)
      for _, id in ipairs(redis.call('SMEMBERS', h)) do
        local d = dkey(id)
        local due = redis.call('HGET', d, 'n') or now
        local status = 'delayed'
        if tonumber(due) <= tonumber(now) then status, ready = 'waiting', true end
        redis.call('HSET', d, 's', status, 'n', due, 'u', now)
        redis.call('ZADD', q, due, id)
        n = n + 1
      end
      redis.call('DEL', h)
    end
  end
  if ready then wake(w) end
  return n
end
"""

# Stores messages and their deliveries, or returns the delivery ids of an earlier keyed fire.
_ENQUEUE = """
local since, nm = ARGV[2], tonumber(ARGV[3])
local base = 4
-- A retry of a call whose reply was lost finds its first message stored: nothing to do.
if nm > 0 and redis.call('EXISTS', P .. 'm:' .. ARGV[base]) == 1 then return {'stored'} end
if since ~= '' and nm == 1 and ARGV[base + 5] ~= '' then
  local key = pair(ARGV[base + 1], string.sub(ARGV[base + 5], 2))
  local earlier = redis.call('GET', P .. 'k:' .. key)
  if earlier then
    local at = redis.call('HGET', P .. 'm:' .. earlier, 'c')
    if at and tonumber(at) >= tonumber(since) then
      local ids = redis.call('LRANGE', P .. 'mk:' .. earlier, 0, -1)
      table.insert(ids, 1, 'repeat')
      return ids
    end
  end
end
local keyed = {}
for j = 0, nm - 1 do
  local at = base + j * 6
  local id, w, key = ARGV[at], ARGV[at + 1], ARGV[at + 5]
  local m = P .. 'm:' .. id
  redis.call('HSET', m, 'w', w, 'ev', ARGV[at + 2], 'b', ARGV[at + 3], 'c', ARGV[at + 4])
  if key ~= '' then
    redis.call('HSET', m, 'k', string.sub(key, 2))
    redis.call('SET', P .. 'k:' .. pair(w, string.sub(key, 2)), id)
    keyed[id] = true
  end
end
base = base + nm * 6
local nd = tonumber(ARGV[base])
local ready = {}
for j = 0, nd - 1 do
  local at = base + 1 + j * 8
  local id, mid, w, e = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local created, resent = ARGV[at + 6], ARGV[at + 7]
  local d = dkey(id)
  redis.call('HSET', d, 'm', mid, 'w', w, 'e', e, 'ev', ARGV[at + 4], 'k', ARGV[at + 5],
    'c', created, 'a', '[]', 'am', '0')
  if resent ~= '' then redis.call('HSET', d, 'r', string.sub(resent, 2)) end
  redis.call('ZADD', P .. 'i', 0, id)
  redis.call('ZADD', P .. 'i:' .. w, 0, id)
  if keyed[mid] then redis.call('RPUSH', P .. 'mk:' .. mid, id) end
  if requeue(id, w, e, created, created, 'waiting') then ready[w] = true end
end
for w in pairs(ready) do wake(w) end
return {'stored'}
"""

# Requeues expired leases, then leases the earliest ready deliveries of a
# webhook within each endpoint's room. Returns the claims (7 fields each) and their bodies.
_CLAIM = """
local w, owner, now, lease = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local limit = tonumber(ARGV[6])
local left = {}
for j = 7, #ARGV, 2 do left[ARGV[j]] = tonumber(ARGV[j + 1]) end
local leases = lkey(w)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now)) do
  local f = redis.call('HMGET', dkey(id), 'e', 'x')
  redis.call('ZREM', leases, id)
  if f[2] == '1' then cancel(id, now)  -- asked to cancel, then its worker was gone
  else requeue(id, w, f[1], now, now, 'waiting') end
end
-- A binary heap of {due, id, endpoint}: the earliest ready delivery of each endpoint.
local heap = {}
local function before(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end
local function push(x)
  heap[#heap + 1] = x
  local i = #heap
  while i > 1 do
    local up = math.floor(i / 2)
    if not before(heap[i], heap[up]) then break end
    heap[i], heap[up] = heap[up], heap[i]
    i = up
  end
end
local function pop()
  local top, last = heap[1], table.remove(heap)
  if #heap > 0 then
    heap[1] = last
    local i = 1
    while true do
      local l, r, m = 2 * i, 2 * i + 1, i
      if l <= #heap and before(heap[l], heap[m]) then m = l end
      if r <= #heap and before(heap[r], heap[m]) then m = r end
      if m == i then break end
      heap[i], heap[m] = heap[m], heap[i]
      i = m
    end
  end
  return top
end
local function head(e)
  local top = redis.call('ZRANGEBYSCORE', qkey(w, e), '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
  if top[1] then push({tonumber(top[2]), top[1], e}) end
end
for _, e in ipairs(redis.call('SMEMBERS', ekey(w))) do
  if redis.call('EXISTS', qkey(w, e), hkey(w, e)) == 0 then
    redis.call('SREM', ekey(w), e)  -- nothing queued or held there any more
  elseif not left[e] or left[e] > 0 then
    head(e)
  end
end
local claims, bodies, seen = {}, {}, {}
local taken = 0
while taken < limit and #heap > 0 do
  local top = pop()
  local id, e = top[2], top[3]
  local d = dkey(id)
  redis.call('ZREM', qkey(w, e), id)
  redis.call('HSET', d, 's', 'active', 'u', now, 'o', owner, 'l', lease)
  redis.call('ZADD', leases, lease, id)
  local f = redis.call('HMGET', d, 'm', 'ev', 'am', 'k', 'c')
  if not seen[f[1]] then
    seen[f[1]] = true
    bodies[#bodies + 1] = f[1]
    bodies[#bodies + 1] = redis.call('HGET', P .. 'm:' .. f[1], 'b') or ''
  end
  for _, v in ipairs({id, f[1], e, f[2], f[3], f[4], f[5]}) do claims[#claims + 1] = v end
  taken = taken + 1
  if left[e] then left[e] = left[e] - 1 end
  if not left[e] or left[e] > 0 then head(e) end
end
return {claims, bodies}
"""

# The earliest due time of a webhook's queued deliveries (outside the skipped endpoints) or
# lease expiry of its active ones; '' if none.
_NEXT_DUE = """
local w = ARGV[2]
local skip = {}
for j = 3, #ARGV do skip[ARGV[j]] = true end
local best, found = nil, ''
local function consider(top)
  if top[1] then
    local t = tonumber(top[2])
    if best == nil or t < best then best, found = t, top[2] end
  end
end
for _, e in ipairs(redis.call('SMEMBERS', ekey(w))) do
  if not skip[e] then consider(redis.call('ZRANGE', qkey(w, e), 0, 0, 'WITHSCORES')) end
end
consider(redis.call('ZRANGE', lkey(w), 0, 0, 'WITHSCORES'))
return found
"""

# Extends the leases the owner still holds; returns their ids.
_RENEW = """
local owner, lease = ARGV[2], ARGV[3]
local held = {}
for j = 4, #ARGV do
  local id = ARGV[j]
  local d = dkey(id)
  local f = redis.call('HMGET', d, 's', 'o', 'w')
  if f[1] == 'active' and f[2] == owner then
    redis.call('HSET', d, 'l', lease)
    redis.call('ZADD', lkey(f[3]), lease, id)
    held[#held + 1] = id
  end
end
return held
"""

# Applies a claim's outcome if the owner still holds it; returns the delivery ({} if lost).
# ARGV: id, owner, now, status, '=due' or '', attempt JSON or '', '=error' or ''.
_SETTLE = """
local id, owner, now, status = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local d = dkey(id)
local f = redis.call('HMGET', d, 's', 'o', 'w', 'e', 'x')
if f[1] ~= 'active' or f[2] ~= owner then return {} end
local w, e = f[3], f[4]
-- Asked while the attempt ran: wins over anything but a delivery (a failed last attempt too).
local cancel_wins = f[5] == '1' and status ~= 'completed' and status ~= 'cancelled'
redis.call('HDEL', d, 'x', 'o')
redis.call('ZREM', lkey(w), id)
local attempt = ARGV[7]
if attempt ~= '' then
  local list = redis.call('HGET', d, 'a')
  if list == '[]' then list = '[' .. attempt .. ']'
  else list = string.sub(list, 1, -2) .. ',' .. attempt .. ']' end
  redis.call('HSET', d, 'a', list)
  redis.call('HINCRBY', d, 'am', 1)
end
if status == 'completed' then redis.call('HDEL', d, 'err')  -- failures stay in attempts
elseif ARGV[8] ~= '' then redis.call('HSET', d, 'err', string.sub(ARGV[8], 2)) end
if cancel_wins then
  redis.call('HSET', d, 'err', 'cancelled')
  cancel(id, now)
elseif status == 'waiting' or status == 'delayed' then
  local due = now
  if ARGV[6] ~= '' then due = string.sub(ARGV[6], 2) end
  if requeue(id, w, e, due, now, status) and tonumber(due) <= tonumber(now) then wake(w) end
else
  redis.call('HSET', d, 's', status, 'u', now)
  if status == 'held' then  -- keeps its schedule for its release
    redis.call('SADD', hkey(w, e), id)
    redis.call('SADD', ekey(w), e)
  else
    redis.call('HDEL', d, 'n')
  end
end
return redis.call('HGETALL', d)
"""

# Cancels a queued or held delivery, or an active one whose lease ran out (its worker is gone);
# flags one still in flight for its worker. Returns the outcome.
_CANCEL = """
local id, now = ARGV[2], ARGV[3]
local d = dkey(id)
local f = redis.call('HMGET', d, 's', 'w', 'e')
local s = f[1]
if not s then return 'missing' end
if terminal(s) then return 'finished' end
if s == 'active' then
  if tonumber(redis.call('HGET', d, 'l')) > tonumber(now) then
    redis.call('HSET', d, 'x', '1')  -- its worker stops the attempt
    return 'requested'
  end
  redis.call('ZREM', lkey(f[2]), id)  -- its lease ran out: its worker is gone
elseif s == 'held' then redis.call('SREM', hkey(f[2], f[3]), id)
else redis.call('ZREM', qkey(f[2], f[3]), id) end
cancel(id, now)
return 'cancelled'
"""

# Which of the owner's active deliveries have been asked to cancel.
_CANCEL_REQUESTED = """
local owner = ARGV[2]
local asked = {}
for j = 3, #ARGV do
  local f = redis.call('HMGET', dkey(ARGV[j]), 's', 'o', 'x')
  if f[1] == 'active' and f[2] == owner and f[3] == '1' then asked[#asked + 1] = ARGV[j] end
end
return asked
"""

# Queues a copy of a finished delivery; returns the copy ({} if there is nothing to copy).
_RESEND = """
local id, new, now = ARGV[2], ARGV[3], ARGV[4]
local f = redis.call('HMGET', dkey(id), 's', 'm', 'w', 'e', 'ev', 'k')
if not f[1] or not terminal(f[1]) then return {} end
local d, w, e = dkey(new), f[3], f[4]
if redis.call('EXISTS', d) == 0 then  -- else a retry of a call whose reply was lost
  redis.call('HSET', d, 'm', f[2], 'w', w, 'e', e, 'ev', f[5], 'k', f[6], 'c', now,
    'a', '[]', 'am', '0', 'r', id)
  redis.call('HSET', P .. 'rs:' .. f[2], e, new)  -- the newest copy of the message to e
  redis.call('ZADD', P .. 'i', 0, new)
  redis.call('ZADD', P .. 'i:' .. w, 0, new)
  if requeue(new, w, e, now, now, 'waiting') then wake(w) end
end
return redis.call('HGETALL', d)
"""

# One page of deliveries, newest first, from an index, filtered by endpoint, status and
# creation time ('=value' or '' for none). Returns the last id looked at ('' when the index
# is exhausted), then id and fields of each match.
# ARGV: index key, cursor ('' from the newest), most to look at, most matches, filters.
_LIST = """
local index, cursor, budget, want = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local endpoint, status, since, till = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local top = '+'
if cursor ~= '' then top = '(' .. cursor end
local ids = redis.call('ZREVRANGEBYLEX', index, top, '-', 'LIMIT', 0, budget)
local out = {''}
local matched = 0
for _, id in ipairs(ids) do
  out[1] = id
  local f = redis.call('HGETALL', dkey(id))
  local row = {}
  for j = 1, #f, 2 do row[f[j]] = f[j + 1] end
  if row.s
    and (endpoint == '' or row.e == string.sub(endpoint, 2))
    and (status == '' or row.s == string.sub(status, 2))
    and (since == '' or tonumber(row.c) >= tonumber(string.sub(since, 2)))
    and (till == '' or tonumber(row.c) < tonumber(string.sub(till, 2))) then
    out[#out + 1] = id
    out[#out + 1] = f
    matched = matched + 1
    if matched >= want then break end
  end
end
if #ids < budget and matched < want then out[1] = '' end
return out
"""

# The definitions version, documents and pause flags, read at once; {} if `known` is current.
_DEFINITIONS = """
local version = redis.call('GET', P .. 'version') or '0'
if version == ARGV[2] then return {} end
local documents = {}
for _, p in ipairs(redis.call('SMEMBERS', P .. 'defs')) do
  documents[#documents + 1] = p
  documents[#documents + 1] = redis.call('HGETALL', P .. 'def:' .. p)
end
return {version, documents, redis.call('SMEMBERS', P .. 'paused')}
"""

# Replaces, merges into ('=json' sets a key, '' removes it) or deletes a definition document.
# ARGV: webhook, endpoint, 'replace' | 'merge' | 'delete', then key, value pairs.
_WRITE_DEFINITION = """
redis.call('INCR', P .. 'version')
local p = pair(ARGV[2], ARGV[3])
local doc = P .. 'def:' .. p
if ARGV[4] == 'delete' then
  redis.call('DEL', doc)
  redis.call('SREM', P .. 'defs', p)
  return {}
end
if ARGV[4] == 'replace' then redis.call('DEL', doc) end
for j = 5, #ARGV, 2 do
  if ARGV[j + 1] == '' then redis.call('HDEL', doc, ARGV[j])
  else redis.call('HSET', doc, ARGV[j], string.sub(ARGV[j + 1], 2)) end
end
redis.call('SADD', P .. 'defs', p)
return {'document', redis.call('HGETALL', doc)}
"""

# Sets or clears a pause flag, holding or releasing the deliveries under it; returns how many.
_SET_PAUSED = """
local w, e, now = ARGV[2], ARGV[3], ARGV[5]
redis.call('INCR', P .. 'version')
if ARGV[4] == '1' then
  redis.call('SADD', P .. 'paused', pair(w, e))
  return hold(w, e, now)
end
redis.call('SREM', P .. 'paused', pair(w, e))
return release(w, e, now)
"""

# Releases held deliveries that no pause holds; returns how many.
_RELEASE = """
return release(ARGV[2], ARGV[3], ARGV[4])
"""

# Which of the deliveries (ARGV from 2) were resent since: the newest copy of their message
# to their endpoint is another delivery.
_RESENT = """
local out = {}
for j = 2, #ARGV do
  local f = redis.call('HMGET', dkey(ARGV[j]), 'm', 'e')
  if f[1] then
    local newest = redis.call('HGET', P .. 'rs:' .. f[1], f[2])
    if newest and newest ~= ARGV[j] then out[#out + 1] = ARGV[j] end
  end
end
return out
"""

_DISCARD = """
return discard(ARGV[2], ARGV[3], ARGV[4], ARGV[5])
"""

# Replaces a webhook's definitions and pause flags by a tombstone and a pause, discarding its
# queued and held deliveries; returns how many. ARGV: webhook, now, tombstone key, its JSON
# value, the reason.
_DELETE_WEBHOOK = """
local w, now = ARGV[2], ARGV[3]
redis.call('INCR', P .. 'version')
local own = pair(w, '')  -- also the start of every pair of the webhook's endpoints
forget(own)
redis.call('HSET', P .. 'def:' .. own, ARGV[4], ARGV[5])
redis.call('SADD', P .. 'defs', own)
redis.call('SADD', P .. 'paused', own)
return discard(w, '', now, ARGV[6])
"""


# Stores a webhook's documents unless a live one of the name is stored (returns 0 then, else
# 1), replacing what a deleted one left (tombstone, pause flags) and discarding its deliveries.
# ARGV: webhook, now, reason, the tombstone key, then per document: its endpoint, its field
# count, and field, JSON value pairs.
_CREATE_WEBHOOK = """
local w, now, reason, deleted = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local own = pair(w, '')  -- also the start of every pair of the webhook's endpoints
local doc = P .. 'def:' .. own
if redis.call('SISMEMBER', P .. 'defs', own) == 1 and not redis.call('HGET', doc, deleted) then
  return 0
end
redis.call('INCR', P .. 'version')
forget(own)
discard(w, '', now, reason)
local j = 6
while j <= #ARGV do
  local p, count = pair(w, ARGV[j]), tonumber(ARGV[j + 1])
  for k = 1, count do
    redis.call('HSET', P .. 'def:' .. p, ARGV[j + 2 * k], ARGV[j + 2 * k + 1])
  end
  redis.call('SADD', P .. 'defs', p)
  j = j + 2 + 2 * count
end
return 1
"""

# Stores an endpoint's document unless a live one of the name is stored (returns 0 then, else
# 1), clearing its pause flag; replacing a removed one's tombstone discards its deliveries.
# ARGV: webhook, endpoint, now, reason, the tombstone key, then field, JSON value pairs.
_CREATE_ENDPOINT = """
local w, e, now, reason, removed = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local p = pair(w, e)
local doc = P .. 'def:' .. p
local stored = redis.call('SISMEMBER', P .. 'defs', p) == 1
if stored and not redis.call('HGET', doc, removed) then return 0 end
redis.call('INCR', P .. 'version')
redis.call('SREM', P .. 'paused', p)
if stored then discard(w, e, now, reason) end
redis.call('DEL', doc)
for j = 7, #ARGV, 2 do redis.call('HSET', doc, ARGV[j], ARGV[j + 1]) end
redis.call('SADD', P .. 'defs', p)
return 1
"""


# Stores guard states if the stored ones are still the expected ones, else returns those.
# KEYS: the states. ARGV: the expected ('' none, '=' and the state; '?' to just read), the new.
_GUARD_STATES = """
local n, stored, same = #KEYS, {'current'}, true
for j = 1, n do
  local state = redis.call('GET', KEYS[j])
  if state then stored[j + 1] = '=' .. state else stored[j + 1] = '' end
  if stored[j + 1] ~= ARGV[1 + j] then same = false end
end
if not same then return stored end
for j = 1, n do redis.call('SET', KEYS[j], ARGV[1 + n + j]) end
return {'stored'}
"""


def _settle_args(delivery_id: str, owner: str, settlement: Settlement, now: float) -> list[Arg]:
    due = settlement.next_attempt_at
    return [
        delivery_id,
        owner,
        _time(now),
        settlement.status,
        "" if due is None else "=" + _time(due),
        "" if settlement.attempt is None else _attempt_json(settlement.attempt),
        _opt(settlement.error),
    ]


def _script(body: str) -> Script[bytes]:
    # Called by SHA; coredis loads the script on the server the first time it is missing.
    return Script[bytes](script=_PRELUDE + body)


ENQUEUE = _script(_ENQUEUE)
CLAIM = _script(_CLAIM)
NEXT_DUE = _script(_NEXT_DUE)
RENEW = _script(_RENEW)
SETTLE = _script(_SETTLE)
CANCEL = _script(_CANCEL)
CANCEL_REQUESTED = _script(_CANCEL_REQUESTED)
RESEND = _script(_RESEND)
LIST = _script(_LIST)
DEFINITIONS = _script(_DEFINITIONS)
WRITE_DEFINITION = _script(_WRITE_DEFINITION)
SET_PAUSED = _script(_SET_PAUSED)
RELEASE = _script(_RELEASE)
DISCARD = _script(_DISCARD)
CREATE_WEBHOOK = _script(_CREATE_WEBHOOK)
CREATE_ENDPOINT = _script(_CREATE_ENDPOINT)
RESENT = _script(_RESENT)
DELETE_WEBHOOK = _script(_DELETE_WEBHOOK)
GUARD_STATES = _script(_GUARD_STATES)
SCRIPTS: tuple[Script[bytes], ...] = (
    *(ENQUEUE, CLAIM, NEXT_DUE, RENEW, SETTLE, CANCEL, CANCEL_REQUESTED, RESEND, LIST),
    *(DEFINITIONS, WRITE_DEFINITION, SET_PAUSED, RELEASE, DELETE_WEBHOOK, GUARD_STATES),
)

KEY_LOCKS = 64
LIST_BUDGET = 1000  # index entries one list call looks at: bounds how long the server is busy

# ---------------------------------------------------------------- Python side


def _time(value: float) -> str:
    return repr(float(value))  # exact: Lua and Redis parse it with strtod


def _opt(value: str | None) -> str:
    """An optional text argument: '' for None, else '=' and the text (which may be empty)."""
    return "" if value is None else "=" + value


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(flat: Sequence[Any]) -> dict[str, bytes]:
    """A hash as the server returns it from Lua (a flat list) or HGETALL (a mapping)."""
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def _pair(encoded: bytes) -> tuple[str, str]:
    """Decodes the Lua `pair(w, e)`: `<bytes in w>:<w>:<e>`."""
    colon = encoded.index(b":")
    size = int(encoded[:colon])
    start = colon + 1
    return encoded[start : start + size].decode(), encoded[start + size + 1 :].decode()


def _delivery(delivery_id: str, f: Mapping[str, bytes]) -> Delivery:
    error, due, resent = f.get("err"), f.get("n"), f.get("r")
    return Delivery(
        id=delivery_id,
        webhook=f["w"].decode(),
        endpoint_name=f["e"].decode(),
        event=f["ev"].decode(),
        status=cast(Status, f["s"].decode()),
        attempts=tuple(Attempt(**a) for a in json.loads(f["a"])),
        error=None if error is None else error.decode(),
        idempotency_key=f["k"].decode(),
        next_attempt_at=None if due is None else float(due),
        created_at=float(f["c"]),
        updated_at=float(f["u"]),
        message_id=f["m"].decode(),
        resent_from=None if resent is None else resent.decode(),
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


def _split_url(url: str, prefix: str | None) -> tuple[str, str]:
    """The URL for coredis (without our `prefix` parameter) and the key prefix."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = [value for name, value in query if name == "prefix"]
    rest = urlencode([(name, value) for name, value in query if name != "prefix"])
    chosen = prefix if prefix is not None else (given[-1] if given else "oqronkit")
    return urlunsplit(parts._replace(query=rest)), chosen


def _spawn(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Starts `fn` in a task of its own that no task group holds (it outlives its caller)."""
    if sniffio.current_async_library() == "trio":
        trio.lowlevel.spawn_system_task(fn, name="oqronkit redis client")
    else:
        task = asyncio.get_running_loop().create_task(fn())
        _TASKS.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(_TASKS.discard)


_TASKS: set[asyncio.Task[None]] = set()


class _Service:
    """A coredis client entered, and later exited, by a task of its own. A client's pool is a
    task group, which must be exited by the task that entered it in the reverse order of
    entry, while backends are opened and closed in any order (by tests, by kits)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.ready = anyio.Event()  # set once running, or once it failed to start
        self.running = False
        self.failure: Exception | None = None
        self._stopping = False
        self._stop = anyio.Event()
        self._done = anyio.Event()
        self._subscriptions: set[anyio.CancelScope] = set()
        self._subscriptions_changed = anyio.Event()
        # Updates of the same keys take turns within this process (striped locks): otherwise
        # concurrent attempts on one endpoint's breaker would mostly conflict and retry.
        self.key_locks = [anyio.Lock() for _ in range(KEY_LOCKS)]
        # The guard states this process last stored or read: usually still current, so an
        # update is one compare-and-set (and when not, that call returns the current ones).
        self.states: dict[str, str | None] = {}

    async def _serve(self) -> None:
        try:
            async with self.client:
                self.running = True
                self.ready.set()
                await self._stop.wait()
        except Exception as exc:  # kept for the caller: a system task must not raise
            self.failure = exc
        finally:
            self.running = False
            self.ready.set()
            self._done.set()

    async def start(self) -> None:
        _spawn(self._serve)
        await self.ready.wait()
        if not self.running:
            raise self.failure or ConnectionError("the Redis client did not start")

    def retire(self, failure: Exception) -> None:
        """Stops the client in the background; calls from now on start a fresh one."""
        if self.running:
            self.running = False
            self.failure = failure
            _spawn(self.stop)

    async def stop(self) -> None:
        """Ends the subscriptions, then the client; a second call waits for the first."""
        with anyio.CancelScope(shield=True):  # closing must finish even when cancelled
            if not self._stopping:
                self._stopping = True
                # Subscriptions end first: one still running would reconnect into a closed
                # pool (and coredis would leak that connection's streams).
                while self._subscriptions:
                    for scope in self._subscriptions:
                        scope.cancel()
                    self._subscriptions_changed = anyio.Event()
                    await self._subscriptions_changed.wait()
                self._stop.set()
            if self.ready.is_set():
                await self._done.wait()

    @asynccontextmanager
    async def subscription(self, channel: str) -> AsyncIterator[AsyncIterator[Any]]:
        """The messages of `channel`, until the client is stopped (then it ends quietly)."""
        if self._stopping or not self.running:
            raise ConnectionError("the Redis client is stopping")
        scope = anyio.CancelScope()
        self._subscriptions.add(scope)
        subscribed = False
        try:
            with scope:
                # A subscription waits for messages with no deadline: after as long as a
                # command may take without one, it pings, so a connection gone silent fails
                # instead of being waited on for ever. Subscribing may take as long (coredis
                # waits 1 s by default, and a failed subscription replaces the client).
                kwargs = self.client.connection_pool.connection_kwargs
                timeout = kwargs.get("stream_timeout") or DEFAULT_TIMEOUT
                pubsub = self.client.pubsub(
                    channels=[channel],
                    ignore_subscribe_messages=True,
                    max_idle_seconds=timeout,
                    subscription_timeout=timeout,
                )
                async with pubsub:
                    subscribed = True
                    yield pubsub
            if not subscribed:  # the client was retired while subscribing: a lost connection
                raise ConnectionError("the Redis client was replaced while subscribing")
        finally:
            self._subscriptions.discard(scope)
            self._subscriptions_changed.set()


class RedisBackend(Backend):
    poll_interval = 5.0  # a safety net: `watch` wakes dispatchers at once
    shares_guards = True

    def __init__(self, url: str, *, prefix: str | None = None) -> None:
        self._url, self.prefix = _split_url(url, prefix)
        self._shown_url = shown_url(url)  # as given: reading it may have mangled a password
        self._p = self.prefix + ":"
        self._service: _Service | None = None

    def __repr__(self) -> str:
        return f"RedisBackend({self._shown_url!r}, prefix={self.prefix!r})"

    # ---------------------------------------------------------------- plumbing

    def _new_client(self) -> Client:
        # No automatic retries: a script whose reply was lost may have run, and running a
        # claim or a guard step twice is not harmless. The failure reaches the caller, whose
        # own recovery (claim again later, let the lease expire) is safe.
        return coredis.Redis.from_url(
            self._url,
            decode_responses=False,
            retry_policy=NoRetryPolicy(),
            stream_timeout=DEFAULT_TIMEOUT,  # the URL's query string wins over these
            connect_timeout=DEFAULT_TIMEOUT,
        )

    async def open(self) -> None:
        if self._service is not None and self._service.running:
            return
        restarting = self._service is not None
        service = self._service = _Service(self._new_client())
        try:
            await service.start()
            # Fails here, not at the first claim, if the server is unreachable; and loads the
            # scripts, so no call has to load its own.
            async with service.client.pipeline(transaction=False) as pipe:
                for script in SCRIPTS:
                    pipe.script_load(script.script)
        except BaseException:
            await service.stop()
            if not restarting:
                self._service = None
            # else the stopped client stays: the next call tries to start one again, where
            # calls of an unopened backend would each open a client of their own for good.
            raise

    async def close(self) -> None:
        service, self._service = self._service, None
        if service is not None:
            await service.stop()

    async def _running(self) -> _Service | None:
        """The open client, started afresh if it stopped; None if the backend is not open."""
        service = self._service
        if service is None:
            return None
        await service.ready.wait()  # another task may be starting it
        if service.running:
            return service
        if self._service is service:
            await self.open()  # if it fails, the caller says so (once a minute, for a loop)
            log.warning("the Redis client of %r stopped (%r); replaced", self, service.failure)
        return await self._running()

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[Client]:
        """The open client, or one for this call only (`fire_sync` outside a running kit runs
        the backend unopened, on an event loop of its own)."""
        service = await self._running()
        if service is None:
            async with self._new_client() as client:
                yield client
            return
        try:
            yield service.client
        except TimeoutError as exc:
            # No answer in time: the connection may be cut without a word (a failover, a
            # dropped route), and coredis would keep sending on it. The next call starts a
            # client of its own, with new connections.
            service.retire(exc)
            raise
        except RuntimeError as exc:
            if service.running:
                raise
            # Another call's timeout stopped this client under this one: coredis's words
            # for it ("pool ... has exited") would puzzle a caller of fire.
            raise ConnectionError("the Redis client was replaced during this call") from exc

    async def _call(
        self, script: Script[bytes], args: Sequence[Arg], keys: Sequence[str] = ()
    ) -> Any:
        async with self._session() as client:
            return await script(keys=keys, args=[self._p, *args], client=client)

    # ---------------------------------------------------------------- the contract

    def unreachable(self, exc: BaseException) -> bool:
        # coredis's ConnectionError (refused, reset, a server loading its data), and what a
        # failover answers at first: a replica refusing writes, a replica without its primary.
        if isinstance(exc, coredis.exceptions.ConnectionError | coredis.exceptions.ReadOnlyError):
            return True
        if isinstance(exc, coredis.exceptions.ResponseError):
            return str(exc).startswith("MASTERDOWN")
        return super().unreachable(exc)

    async def watch(
        self, wake: Callable[[str], None], ready: Callable[[], None] = lambda: None
    ) -> None:
        service = await self._running()
        if service is None:
            raise KitNotRunning("watching a Redis backend needs it open")
        # Ends when the client is replaced after a timeout, or when the subscription's own
        # ping finds its connection gone silent.
        try:
            async with service.subscription(self._p + "wake") as messages:
                ready()
                async for message in messages:  # coredis resubscribes after a reconnect
                    if message["type"] == "message":
                        wake(_text(message["data"]))
        except Exception as exc:  # coredis raises from a task group: a group of exceptions
            if not self.unreachable(exc):
                raise
            # Its connection failed or timed out, and coredis would go on using the pool's
            # others (in a failover, as silent): the client is replaced, as after a timeout.
            failure = ConnectionError(f"the Redis subscription to wake-ups failed: {describe(exc)}")
            service.retire(failure)
            raise failure from exc
        # Returning would tell the kit this backend does not notify: raise, so it subscribes anew.
        raise ConnectionError("the Redis subscription to wake-ups ended")

    async def enqueue(
        self,
        messages: Sequence[Message],
        deliveries: Sequence[NewDelivery],
        *,
        idempotency_since: float | None = None,
    ) -> list[str] | None:
        if not messages and not deliveries:
            return None
        args: list[Arg] = [
            "" if idempotency_since is None else _time(idempotency_since),
            str(len(messages)),
        ]
        for m in messages:
            args += (m.id, m.webhook, m.event, m.body, _time(m.created_at))
            args.append(_opt(m.idempotency_key))
        args.append(str(len(deliveries)))
        for d in deliveries:
            args += (d.id, d.message_id, d.webhook, d.endpoint_name, d.event)
            args += (d.idempotency_key, _time(d.created_at), _opt(d.resent_from))
        # Shielded (the command's timeout bounds it): once sent, the script runs whatever the
        # caller does, so a fire cancelled while waiting for its answer would say "not stored"
        # of stored deliveries, and a caller firing again would send them twice. It returns
        # the ids instead; the cancellation lands at the caller's next checkpoint.
        with anyio.CancelScope(shield=True):
            result = await self._call(ENQUEUE, args)
        if result and result[0] == b"repeat":
            return [_text(i) for i in result[1:]]
        return None

    async def claim(
        self,
        webhook: str,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        room: Mapping[str, int] | None = None,
    ) -> list[Claim]:
        args: list[Arg] = [webhook, owner, _time(now), _time(lease_until), str(limit)]
        for endpoint, n in (room or {}).items():
            args += (endpoint, str(n))
        flat, body_pairs = await self._call(CLAIM, args)
        bodies = {body_pairs[i]: body_pairs[i + 1] for i in range(0, len(body_pairs), 2)}
        return [
            Claim(
                id=_text(flat[i]),
                message_id=_text(flat[i + 1]),
                webhook=webhook,
                endpoint_name=_text(flat[i + 2]),
                event=_text(flat[i + 3]),
                body=bytes(bodies[flat[i + 1]]),
                attempts_made=int(flat[i + 4]),
                idempotency_key=_text(flat[i + 5]),
                created_at=float(flat[i + 6]),
            )
            for i in range(0, len(flat), 7)
        ]

    async def next_due(self, webhook: str, skip_endpoints: Collection[str] = ()) -> float | None:
        found = await self._call(NEXT_DUE, [webhook, *skip_endpoints])
        return float(found) if found else None

    async def renew(self, owner: str, ids: Collection[str], lease_until: float) -> set[str]:
        if not ids:
            return set()
        held = await self._call(RENEW, [owner, _time(lease_until), *ids])
        return {_text(i) for i in held}

    async def settle(
        self, delivery_id: str, owner: str, settlement: Settlement, now: float
    ) -> Delivery | None:
        [settled] = await self.settle_many([(delivery_id, owner, settlement, now)])
        return settled

    async def settle_many(self, settles: Sequence[SettleRequest]) -> list[Delivery | None]:
        # One script per settle (each atomic on its own), all in one pipelined round trip.
        async with self._session() as client:
            async with client.pipeline(transaction=False) as pipe:
                calls: list[Awaitable[Any]] = [
                    SETTLE(keys=(), args=[self._p, *_settle_args(*request)], client=pipe)
                    for request in settles
                ]
            flats = [await call for call in calls]
        return [
            _delivery(request[0], _fields(flat)) if flat else None
            for request, flat in zip(settles, flats, strict=True)
        ]

    async def cancel(self, delivery_id: str, now: float) -> CancelOutcome:
        outcome = await self._call(CANCEL, [delivery_id, _time(now)])
        return cast(CancelOutcome, _text(outcome))

    async def cancel_requested(self, owner: str, ids: Collection[str]) -> set[str]:
        if not ids:
            return set()
        asked = await self._call(CANCEL_REQUESTED, [owner, *ids])
        return {_text(i) for i in asked}

    async def resend(self, delivery_id: str, new_id: str, now: float) -> Delivery | None:
        flat = await self._call(RESEND, [delivery_id, new_id, _time(now)])
        return _delivery(new_id, _fields(flat)) if flat else None

    async def resent(self, delivery_ids: Sequence[str]) -> set[str]:
        if not delivery_ids:
            return set()
        found = await self._call(RESENT, list(delivery_ids))
        return {_text(i) for i in found}

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        async with self._session() as client:
            found = await client.hgetall(self._p + "d:" + delivery_id)
        if not found:
            return None
        return _delivery(delivery_id, {_text(k): v for k, v in found.items()})

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
        event_matches = glob_predicate(event)  # an invalid pattern raises before any call
        index = "i" if webhook is None else "i:" + webhook
        filters: list[Arg] = [
            _opt(endpoint),
            _opt(status),
            "" if since is None else "=" + _time(since),
            "" if until is None else "=" + _time(until),
        ]
        found: list[Delivery] = []
        cursor = before or ""
        while len(found) < limit:
            want = limit - len(found)
            page = await self._call(
                LIST, [self._p + index, cursor, str(LIST_BUDGET), str(want), *filters]
            )
            for i in range(1, len(page), 2):
                delivery = _delivery(_text(page[i]), _fields(page[i + 1]))
                if event_matches(delivery.event):
                    found.append(delivery)
            cursor = _text(page[0])
            if not cursor:
                break
        return found[:limit]

    # ---------------------------------------------------------------- runtime definitions

    async def definitions(self, known_version: int | None = None) -> Definitions | None:
        known = "" if known_version is None else str(known_version)
        result = await self._call(DEFINITIONS, [known])
        if not result:
            return None
        version, flat_documents, paused = result
        documents: dict[tuple[str, str], Document] = {}
        for i in range(0, len(flat_documents), 2):
            fields = _fields(flat_documents[i + 1])
            documents[_pair(flat_documents[i])] = {k: json.loads(v) for k, v in fields.items()}
        return Definitions(int(version), documents, frozenset(_pair(p) for p in paused))

    async def write_definition(
        self, webhook: str, endpoint: str, changes: Mapping[str, Any] | None, *, replace: bool
    ) -> Document | None:
        args: list[Arg] = [webhook, endpoint]
        if changes is None:
            args.append("delete")
        else:
            args.append("replace" if replace else "merge")
            for key, value in changes.items():
                args += (key, "" if value is None else "=" + json.dumps(value))
        result = await self._call(WRITE_DEFINITION, args)
        if not result:
            return None
        return {k: json.loads(v) for k, v in _fields(result[1]).items()}

    async def set_paused(self, webhook: str, endpoint: str, paused: bool, now: float) -> int:
        args = [webhook, endpoint, "1" if paused else "0", _time(now)]
        return int(await self._call(SET_PAUSED, args))

    async def release(self, webhook: str, endpoint: str, now: float) -> int:
        return int(await self._call(RELEASE, [webhook, endpoint, _time(now)]))

    async def discard(self, webhook: str, endpoint: str, now: float, reason: str) -> int:
        return int(await self._call(DISCARD, [webhook, endpoint, _time(now), reason]))

    async def create_webhook(
        self, webhook: str, documents: Mapping[str, Document], now: float, reason: str
    ) -> bool:
        args: list[Arg] = [webhook, _time(now), reason, DELETED]
        for endpoint, document in documents.items():
            args += (endpoint, str(len(document)))
            for key, value in document.items():
                args += (key, json.dumps(value))
        return bool(await self._call(CREATE_WEBHOOK, args))

    async def create_endpoint(
        self, webhook: str, endpoint: str, document: Document, now: float, reason: str
    ) -> bool:
        args: list[Arg] = [webhook, endpoint, _time(now), reason, REMOVED]
        for key, value in document.items():
            args += (key, json.dumps(value))
        return bool(await self._call(CREATE_ENDPOINT, args))

    async def delete_webhook(self, webhook: str, now: float, reason: str) -> int:
        args = [webhook, _time(now), DELETED, json.dumps(True), reason]
        return int(await self._call(DELETE_WEBHOOK, args))

    # ---------------------------------------------------------------- shared guard state

    async def update_state(self, keys: Sequence[str], update: StateUpdate[T]) -> T:
        if not keys:
            return update([])[1]
        names = [self._p + "g:" + key for key in keys]
        service = self._service
        if service is None:
            return await self._compare_and_set(names, update, {})
        async with service.key_locks[hash(tuple(sorted(keys))) % KEY_LOCKS]:
            return await self._compare_and_set(names, update, service.states)

    async def _compare_and_set(
        self, names: list[str], update: StateUpdate[T], seen: dict[str, str | None]
    ) -> T:
        """Optimistic (`update` is Python, so it cannot run inside the server): stores the
        states `update` makes of the states last seen if those are still stored, else tries
        again on the stored ones, which the server returns instead. One round trip per try
        (two when this process has not seen a state yet), on a shared connection."""
        n = len(names)
        if all(name in seen for name in names):
            stored = [seen[name] for name in names]
        else:
            reply = await self._call(GUARD_STATES, ["?"] * n + [""] * n, names)  # '?' reads
            stored = [_text(v)[1:] if v else None for v in reply[1:]]
        while True:
            states, result = update(stored)
            reply = await self._call(GUARD_STATES, [*map(_opt, stored), *states], names)
            if reply[0] == b"stored":
                seen.update(zip(names, states, strict=True))
                return result
            stored = [_text(v)[1:] if v else None for v in reply[1:]]
            seen.update(zip(names, stored, strict=True))
