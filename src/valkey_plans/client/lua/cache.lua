#!lua name=valkey_plans
--[[
valkey_plans: the cache instance's record bounds, enforced on the server.

Valkey evicts by memory and for the whole instance; the plan asks for exact
record counts per db (about 100 users, N messages). Each function below is one
FCALL: one round trip, atomic, so no interleaving client can ever observe (or
create) a db above its cap.

Exact LRU: a sorted set per bounded db scores each record by a logical clock
(INCR of a counter key), not by wall time: the counter never repeats and never
goes back, so ties cannot make the eviction order ambiguous. Structural keys
(the LRU set, its clock, queue lists) carry no TTL, so `volatile-lru` can never
evict them; records carry a TTL, so memory pressure can only drop records.

Keys: every key the caller knows is passed in KEYS. Two kinds of keys are only
known on the server: the record an LRU trim evicts, and the per-owner session
set named inside a session. Touching them is safe because the cache role is a
standalone instance (it uses several dbs, which Valkey Cluster does not allow).

Bump VERSION whenever this file changes: clients refuse an instance whose
loaded library differs, and the deploy reloads it when the version differs.
]]

local VERSION = '2'

local function positive_integer(value, name, fname)
  local n = tonumber(value)
  if n == nil or n < 1 or n ~= math.floor(n) then
    error(redis.error_reply(
      'ERR ' .. fname .. ': ' .. name .. ' must be a positive integer, got ' .. tostring(value)))
  end
  return n
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- LRU primitives -------------------------------------------------------------

local function lru_touch(zset, clock, member)
  -- %d: the counter as an exact integer (Lua would print large numbers as 1e+14)
  redis.call('ZADD', zset, string.format('%d', redis.call('INCR', clock)), member)
end

local function lru_trim(zset, cap)
  local excess = redis.call('ZCARD', zset) - cap
  if excess > 0 then
    local victims = redis.call('ZPOPMIN', zset, excess)
    for i = 1, #victims, 2 do
      redis.call('DEL', victims[i])
    end
  end
end

local function lru_get_one(zset, clock, key)
  local value = redis.call('GET', key)
  if value then
    lru_touch(zset, clock, key)
  else
    -- expired or evicted by memory pressure: forget its LRU slot too
    redis.call('ZREM', zset, key)
  end
  return value
end

local function lru_put_one(zset, clock, key, value, ttl_ms, cap)
  redis.call('SET', key, value, 'PX', ttl_ms)
  lru_touch(zset, clock, key)
  lru_trim(zset, cap)
end

-- KEYS: lru zset, clock, record    ARGV: -
local function vp_lru_get(keys, args)
  return lru_get_one(keys[1], keys[2], keys[3])
end

-- KEYS: lru zset, clock, record...  ARGV: -    (touches in the order given)
-- Same effect as vp_lru_get per key in order, in a few commands per chunk instead
-- of three per key: the clock advances once per chunk by the number of hits.
local CHUNK = 500  -- stays well under Lua's unpack() limit
local function vp_lru_mget(keys, args)
  local zset, clock, out = keys[1], keys[2], {}
  for first = 3, #keys, CHUNK do
    local last = math.min(first + CHUNK - 1, #keys)
    local values = redis.call('MGET', unpack(keys, first, last))
    local hits, misses = {}, {}
    for i = 1, #values do
      local key = keys[first + i - 1]
      out[#out + 1] = values[i]
      if values[i] then hits[#hits + 1] = key else misses[#misses + 1] = key end
    end
    if #hits > 0 then
      local top = redis.call('INCRBY', clock, #hits)
      local pairs_ = {}
      for i = 1, #hits do
        pairs_[#pairs_ + 1] = string.format('%d', top - #hits + i)
        pairs_[#pairs_ + 1] = hits[i]
      end
      redis.call('ZADD', zset, unpack(pairs_))
    end
    if #misses > 0 then
      redis.call('ZREM', zset, unpack(misses))
    end
  end
  return out
end

-- KEYS: lru zset, clock, record    ARGV: value, ttl_ms, cap
local function vp_lru_put(keys, args)
  local ttl = positive_integer(args[2], 'ttl_ms', 'vp_lru_put')
  local cap = positive_integer(args[3], 'cap', 'vp_lru_put')
  lru_put_one(keys[1], keys[2], keys[3], args[1], ttl, cap)
  return 1
end

-- KEYS: lru zset, record    ARGV: -
local function vp_lru_del(keys, args)
  redis.call('ZREM', keys[1], keys[2])
  return redis.call('DEL', keys[2])
end

-- Sessions -------------------------------------------------------------------
-- A session is a hash {owner, data, index}; `index` names the owner's set of
-- session keys. A session counts only while its owner's set still lists it, so
-- losing the set (expiry, eviction) revokes rather than orphans its sessions.

local function extend_ttl(key, ttl)
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end

-- KEYS: session, owner's session set    ARGV: owner, data, ttl_ms
local function vp_session_create(keys, args)
  local ttl = positive_integer(args[3], 'ttl_ms', 'vp_session_create')
  redis.call('DEL', keys[1])
  redis.call('HSET', keys[1], 'owner', args[1], 'data', args[2], 'index', keys[2])
  redis.call('PEXPIRE', keys[1], ttl)
  redis.call('SADD', keys[2], keys[1])
  extend_ttl(keys[2], ttl)
  return 1
end

-- KEYS: session    ARGV: slide_ms (0: leave the expiry alone)
-- Returns {owner, data} or nil.
local function vp_session_get(keys, args)
  local slide = tonumber(args[1]) or 0
  local fields = redis.call('HMGET', keys[1], 'owner', 'data', 'index')
  if not fields[1] then
    return false
  end
  if redis.call('SISMEMBER', fields[3], keys[1]) == 0 then
    redis.call('DEL', keys[1])
    return false
  end
  if slide > 0 then
    redis.call('PEXPIRE', keys[1], slide)
    extend_ttl(fields[3], slide)
  end
  return {fields[1], fields[2]}
end

-- KEYS: session    ARGV: -
local function vp_session_revoke(keys, args)
  local index = redis.call('HGET', keys[1], 'index')
  if index then
    redis.call('SREM', index, keys[1])
  end
  return redis.call('DEL', keys[1])
end

-- KEYS: owner's session set    ARGV: -
local function vp_session_revoke_all(keys, args)
  local revoked = 0
  for _, session in ipairs(redis.call('SMEMBERS', keys[1])) do
    revoked = revoked + redis.call('DEL', session)
  end
  redis.call('DEL', keys[1])
  return revoked
end

-- Message queue --------------------------------------------------------------
-- The pending list carries whole envelopes (key and body), so a message can
-- never be lost to the msg: LRU bound; the msg: record is the readable copy.
-- Workers BLMOVE pending -> processing (RIGHT -> LEFT: first in, first out).

-- KEYS: lru zset, clock, msg record, pending    ARGV: envelope, body, ttl_ms, cap
local function vp_queue_enqueue(keys, args)
  local ttl = positive_integer(args[3], 'ttl_ms', 'vp_queue_enqueue')
  local cap = positive_integer(args[4], 'cap', 'vp_queue_enqueue')
  lru_put_one(keys[1], keys[2], keys[3], args[2], ttl, cap)
  return redis.call('LPUSH', keys[4], args[1])
end

-- KEYS: processing, taken stamps, lru zset, msg record    ARGV: envelope
local function vp_queue_ack(keys, args)
  local removed = redis.call('LREM', keys[1], 1, args[1])
  redis.call('HDEL', keys[2], args[1])
  redis.call('ZREM', keys[3], keys[4])
  redis.call('DEL', keys[4])
  return removed
end

-- KEYS: processing, taken stamps, pending    ARGV: min_idle_ms
-- An entry is stamped the first time recovery sees it in processing and moved
-- back to the head of pending once it has sat there min_idle_ms since: a live
-- worker gets at least min_idle_ms per job, a dead worker's job comes back.
local function vp_queue_recover(keys, args)
  local min_idle = tonumber(args[1])
  if min_idle == nil or min_idle < 0 then
    error(redis.error_reply(
      'ERR vp_queue_recover: min_idle_ms must be a number >= 0, got ' .. tostring(args[1])))
  end
  local now = now_ms()
  local moved = 0
  for _, envelope in ipairs(redis.call('LRANGE', keys[1], 0, -1)) do
    local seen = tonumber(redis.call('HGET', keys[2], envelope))
    if seen == nil and min_idle > 0 then
      redis.call('HSET', keys[2], envelope, string.format('%d', now))
    elseif seen == nil or now - seen >= min_idle then
      redis.call('LREM', keys[1], 1, envelope)
      redis.call('HDEL', keys[2], envelope)
      redis.call('RPUSH', keys[3], envelope)
      moved = moved + 1
    end
  end
  return moved
end

redis.register_function{function_name = 'vp_version', flags = {'no-writes'},
  callback = function() return VERSION end}
redis.register_function('vp_lru_get', vp_lru_get)
redis.register_function('vp_lru_mget', vp_lru_mget)
redis.register_function('vp_lru_put', vp_lru_put)
redis.register_function('vp_lru_del', vp_lru_del)
redis.register_function('vp_session_create', vp_session_create)
redis.register_function('vp_session_get', vp_session_get)
redis.register_function('vp_session_revoke', vp_session_revoke)
redis.register_function('vp_session_revoke_all', vp_session_revoke_all)
redis.register_function('vp_queue_enqueue', vp_queue_enqueue)
redis.register_function('vp_queue_ack', vp_queue_ack)
redis.register_function('vp_queue_recover', vp_queue_recover)
