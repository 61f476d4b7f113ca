"""The Lua scripts that change route state in Redis, each one atomic round trip.

Both take ``KEYS = [ROUTES, VERSIONS, audit_key(route)]`` and
``ARGV = [route, version, state_json, at, by, reason, action, maxlen, channel]``;
the audit entry's ``before`` is the state Redis held (read inside the script).

- ``PUT``: compare-and-set. Commits iff the stored version equals ``version - 1``
  (a missing route counts as 0); sets the state, appends the audit entry and publishes the
  state on the changes channel. Returns ``{1, version}`` or ``{0, stored_version}``.
- ``RESTORE``: max-wins, used by replicas after Redis lost its data (it keeps nothing on
  disk): installs a replica's last-known state iff it is newer than what Redis holds, so
  new changes continue above every version any replica has seen.

``EPOCH`` (``KEYS = [REPLICAS_EPOCH]``) creates the replica registry's epoch if it is missing
and returns ``{epoch_ms, now_ms}``, both in Redis server time (one clock for every
replica and writer): see :mod:`router.flags.epoch`.
"""

from __future__ import annotations

from lora_router.router.flags import keys
from lora_router.router.flags.state import RouteState

_COMMIT = """
local before = redis.call('HGET', KEYS[1], ARGV[1]) or ''
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*',
  'version', ARGV[2], 'at', ARGV[4], 'by', ARGV[5], 'reason', ARGV[6],
  'action', ARGV[7], 'before', before, 'after', ARGV[3])
redis.call('PUBLISH', ARGV[9], ARGV[3])
"""

PUT = (
    """
local stored = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if stored ~= tonumber(ARGV[2]) - 1 then
  return {0, stored}
end
"""
    + _COMMIT
    + "return {1, tonumber(ARGV[2])}\n"
)

RESTORE = (
    """
local stored = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if stored >= tonumber(ARGV[2]) then
  return {0, stored}
end
"""
    + _COMMIT
    + "return {1, tonumber(ARGV[2])}\n"
)


EPOCH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local since = tonumber(redis.call('GET', KEYS[1]) or '')
if not since then
  redis.call('SET', KEYS[1], now)
  since = now
end
return {since, now}
"""


def script_keys(route: str) -> list[str]:
    return [keys.ROUTES, keys.VERSIONS, keys.audit_key(route)]


def script_args(state: RouteState, action: str, channel: str) -> list[str | int]:
    """``channel``: the changes channel of the store's database (:func:`keys.channel`)."""
    return [
        state.route,
        state.version,
        state.model_dump_json(),
        state.updated_at.isoformat(),
        state.updated_by,
        state.reason,
        action,
        keys.AUDIT_MAXLEN,
        channel,
    ]
