#!lua name=valkey_plans
--[[
valkey_plans: the cache instance's record bounds, enforced on the server.

Valkey evicts by memory and for the whole instance; the plan asks for exact
record counts per db (about 100 users, N messages). Each function below is one
FCALL: one round trip, atomic, so no interleaving client can ever observe (or
create) a db above its cap.

Exact LRU: a sorted set per bounded db scores each record by a logical clock
(INCR of a counter key), not by wall time: the counter never repeats and never
goes back, so ties cannot make the eviction order ambiguous. Clients read hits
with native commands (RPUSH of the key onto the set's touch log `<zset>:touches`,
then GET, in one round trip); every function here that can trim or reorder the
set first drains that log in order (lru_drain), so each trim sees every read the
server ran before it, in the server's order. Structural keys
(the LRU set, its clock, queue lists) carry no TTL, so `volatile-lru` can never
evict them; records carry a TTL, so memory pressure can only drop records.

Keys: every key the caller knows is passed in KEYS. Some keys are only known on
the server: the record an LRU trim evicts, the per-owner session set named inside
a session, and names derived from a key the caller passes (the touch log
`<zset>:touches`, the fills' leases `<zset>:leases`, the queue's
`<msg zset>:deliveries` counts), derived so that the functions' signatures stay.
Touching them is safe
because the cache role is a standalone instance (it uses several dbs, which Valkey Cluster does not allow).

Bump VERSION whenever this file changes: clients refuse an instance whose
loaded library differs, and the deploy reloads it when the version differs.
]]

local VERSION = '5'

-- Arguments ------------------------------------------------------------------
-- Every function checks all its keys and arguments (and the type of every key
-- it writes) before its first write, so a refused call changes nothing: no
-- half-written record, no session or record without its TTL. The Python client
-- checks the same limits before it sends anything (valkey_plans.client.cache).

-- The longest TTL or idle time, in ms: 10 years of 365 days (cache.MAX_SECONDS).
-- Far inside Valkey's own limit (now_ms + ttl must fit a signed 64-bit integer)
-- and inside 2^53, so Lua reads every allowed value as an exact integer.
local MAX_MS = 315360000000
local MAX_MS_TEXT = 'an integer number of ms from %d to 315360000000 (10 years)'
-- A sorted set holds at most 2^32 - 1 members (cache.MAX_CAP).
local MAX_CAP = 4294967295

local function shown(value)
  if value == nil then
    return 'nothing'
  end
  local text = tostring(value)
  if #text > 40 then
    text = string.sub(text, 1, 40) .. '...'
  end
  return "'" .. (string.gsub(text, '%c', '?')) .. "'"
end

local function refuse(fname, what, value, allowed)
  error(redis.error_reply(
    'ERR ' .. fname .. ': ' .. what .. ' = ' .. shown(value) .. ': allowed: ' .. allowed))
end

-- Decimal digits only: tonumber alone would also take '0x10', ' 5', '1e3', 'inf'.
local function integer_arg(fname, name, value, low, high, allowed)
  if type(value) ~= 'string' or not string.find(value, '^%d+$') or #value > 15 then
    refuse(fname, name, value, allowed)
  end
  local n = tonumber(value)
  if n < low or n > high then
    refuse(fname, name, value, allowed)
  end
  return n
end

local function ms_arg(fname, name, value, low)
  return integer_arg(fname, name, value, low, MAX_MS, string.format(MAX_MS_TEXT, low))
end

local function cap_arg(fname, value)
  return integer_arg(fname, 'cap', value, 1, MAX_CAP, 'an integer from 1 to 4294967295')
end

-- Exactly the keys and arguments the function documents (`more`: vp_lru_mget takes
-- any number of records after its first keys), none of them empty, and none of the
-- first keys repeated anywhere (a record named like its LRU set would overwrite it).
local function arity(fname, keys, args, nkeys, nargs, more)
  if #keys ~= nkeys and not (more and #keys > nkeys) then
    refuse(fname, 'number of keys', #keys, (more and 'at least ' or '') .. nkeys)
  end
  if #args ~= nargs then
    refuse(fname, 'number of arguments', #args, tostring(nargs))
  end
  for i = 1, #keys do
    if keys[i] == '' then
      refuse(fname, 'key ' .. i, keys[i], 'a non-empty key name')
    end
  end
  for i = 1, nkeys do
    for j = i + 1, #keys do
      if keys[i] == keys[j] then
        refuse(fname, 'key ' .. j, keys[j], 'a key other than key ' .. i)
      end
    end
  end
end

-- A key this call writes must be absent or already of the type it writes.
local function key_type(fname, key, want)
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= want then
    refuse(fname, 'type of ' .. key, found, 'a ' .. want .. ' or no key')
  end
end

-- Records are JSON objects (the client encodes them strictly): the cheap shape check
-- catches arguments passed in the wrong order.
local function json_object(fname, name, value)
  if string.sub(value, 1, 1) ~= '{' or string.sub(value, -1) ~= '}' then
    refuse(fname, name, value, 'a JSON object')
  end
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

-- The touch log of an LRU set, and the lease a reader holds while it fills a record.
local function touches_of(zset)
  return zset .. ':touches'
end

-- One hash of leases per LRU set (field: record key, value: the reader's token), so
-- the db's key count stays cap + a fixed number of structural keys. A lease that is
-- never used (the source had no such record, the reader died) stays until the key is
-- written or filled, or until the drain clears a hash grown past MAX_LEASES, which
-- only refuses the fills then in flight.
local MAX_LEASES = 1000

local function leases_of(zset)
  return zset .. ':leases'
end

-- Apply the logged reads in order: each key's last read gets the next clock values,
-- keys read but gone (expired, evicted by memory) leave the set. INCRBY is the first
-- write (it fails on a clock that is no integer before anything changes); members
-- not in the set are left out (ZADD XX), so junk in the log changes nothing.
local function lru_drain(zset, clock)
  local log = touches_of(zset)
  local n = redis.call('LLEN', log)
  if n == 0 then
    return
  end
  local logged = redis.call('LRANGE', log, 0, n - 1)
  local last, order = {}, {}
  for i = 1, #logged do
    last[logged[i]] = i
  end
  for i = 1, #logged do
    if last[logged[i]] == i then
      order[#order + 1] = logged[i]
    end
  end
  local top = redis.call('INCRBY', clock, #order)
  if redis.call('HLEN', leases_of(zset)) > MAX_LEASES then
    redis.call('DEL', leases_of(zset))
  end
  redis.call('DEL', log)
  for i, key in ipairs(order) do
    if redis.call('EXISTS', key) == 1 then
      redis.call('ZADD', zset, 'XX', string.format('%d', top - #order + i), key)
    else
      redis.call('ZREM', zset, key)
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

-- The clock first: INCR is the one write here that can still fail (a clock key that
-- holds no integer), and it fails before anything else is written.
local function lru_put_one(zset, clock, key, value, ttl_ms, cap)
  lru_touch(zset, clock, key)
  redis.call('SET', key, value, 'PX', ttl_ms)
  lru_trim(zset, cap)
end

-- The LRU set and its touch log must be of their types before anything is written.
local function lru_types(fname, zset)
  key_type(fname, zset, 'zset')
  key_type(fname, touches_of(zset), 'list')
  key_type(fname, leases_of(zset), 'hash')
end

-- KEYS: lru zset, clock, record    ARGV: -
local function vp_lru_get(keys, args)
  arity('vp_lru_get', keys, args, 3, 0)
  lru_types('vp_lru_get', keys[1])
  lru_drain(keys[1], keys[2])
  return lru_get_one(keys[1], keys[2], keys[3])
end

-- KEYS: lru zset, clock    ARGV: -
-- Apply the touch log now (clients do it every few hundred hits, so it stays short).
local function vp_lru_drain(keys, args)
  arity('vp_lru_drain', keys, args, 2, 0)
  lru_types('vp_lru_drain', keys[1])
  lru_drain(keys[1], keys[2])
  return redis.call('ZCARD', keys[1])
end

-- KEYS: lru zset, clock, record...  ARGV: -    (touches in the order given)
-- Same effect as vp_lru_get per key in order, in a few commands per chunk instead
-- of three per key: the clock advances once per chunk by the number of hits.
local CHUNK = 500  -- stays well under Lua's unpack() limit
local function vp_lru_mget(keys, args)
  arity('vp_lru_mget', keys, args, 2, 0, true)
  lru_types('vp_lru_mget', keys[1])
  local zset, clock, out = keys[1], keys[2], {}
  lru_drain(zset, clock)
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

-- A write (put) and an invalidation (del) end any fill in flight: they drop its lease.
local function lru_store(zset, clock, key, value, ttl_ms, cap)
  lru_drain(zset, clock)
  redis.call('HDEL', leases_of(zset), key)
  lru_put_one(zset, clock, key, value, ttl_ms, cap)
end

-- KEYS: lru zset, clock, record    ARGV: value, ttl_ms, cap
local function vp_lru_put(keys, args)
  arity('vp_lru_put', keys, args, 3, 3)
  json_object('vp_lru_put', 'value', args[1])
  ms_arg('vp_lru_put', 'ttl_ms', args[2], 1)
  local cap = cap_arg('vp_lru_put', args[3])
  lru_types('vp_lru_put', keys[1])
  lru_store(keys[1], keys[2], keys[3], args[1], args[2], cap)
  return 1
end

-- KEYS: lru zset, clock, record    ARGV: value, ttl_ms, cap, lease token
-- A read-through fill: stores the value only while the reader's lease
-- (field <record> of `<zset>:leases`, HSET before it read the source) still holds its
-- token. A put or a del of the record since then dropped the lease, so a value read
-- before a newer write was applied here is never stored. Returns 1 stored, 0 refused.
local function vp_lru_fill(keys, args)
  local fname = 'vp_lru_fill'
  arity(fname, keys, args, 3, 4)
  json_object(fname, 'value', args[1])
  ms_arg(fname, 'ttl_ms', args[2], 1)
  local cap = cap_arg(fname, args[3])
  if args[4] == '' then
    refuse(fname, 'token', args[4], 'a non-empty lease token')
  end
  lru_types(fname, keys[1])
  if redis.call('HGET', leases_of(keys[1]), keys[3]) ~= args[4] then
    return 0
  end
  lru_store(keys[1], keys[2], keys[3], args[1], args[2], cap)
  return 1
end

-- KEYS: lru zset, record    ARGV: -
local function vp_lru_del(keys, args)
  arity('vp_lru_del', keys, args, 2, 0)
  key_type('vp_lru_del', keys[1], 'zset')
  key_type('vp_lru_del', leases_of(keys[1]), 'hash')
  redis.call('ZREM', keys[1], keys[2])
  redis.call('HDEL', leases_of(keys[1]), keys[2])
  return redis.call('DEL', keys[2])
end

-- Sessions -------------------------------------------------------------------
-- A session is a hash {owner, data, index}; `index` names the owner's set of
-- session keys. The set carries no TTL, so `volatile-lru` can never evict it and
-- revoke_all always finds every live session of its owner: a session is live while
-- its hash exists, which is what lets clients read it with one native HMGET. Each
-- create drops the members whose session has expired, so a set holds at most the
-- owner's sessions created since its last create plus its live ones.

-- Checks a session's arguments and key types; nothing is written before they pass.
local function session_args(fname, keys, args)
  if args[1] == '' then
    refuse(fname, 'owner', args[1], 'a non-empty record key')
  end
  json_object(fname, 'data', args[2])
  ms_arg(fname, 'ttl_ms', args[3], 1)
  key_type(fname, keys[2], 'set')
end

-- From the DEL on, nothing can fail, so the session never exists without its TTL.
local function session_store(keys, args)
  redis.call('DEL', keys[1])
  redis.call('HSET', keys[1], 'owner', args[1], 'data', args[2], 'index', keys[2])
  redis.call('PEXPIRE', keys[1], args[3])
  for _, session in ipairs(redis.call('SMEMBERS', keys[2])) do
    if redis.call('EXISTS', session) == 0 then
      redis.call('SREM', keys[2], session)
    end
  end
  redis.call('SADD', keys[2], keys[1])
  redis.call('PERSIST', keys[2])  -- a set made by version 3 had a TTL
end

-- KEYS: session, owner's session set    ARGV: owner, data, ttl_ms
local function vp_session_create(keys, args)
  arity('vp_session_create', keys, args, 2, 3)
  session_args('vp_session_create', keys, args)
  session_store(keys, args)
  return 1
end

-- The leases of session fills in flight: one hash (field: session key, value: the
-- reader's token), cleared whole when it grows past MAX_LEASES (reads of sessions
-- that hosted does not have leave theirs behind), which only refuses the fills then
-- in flight. A revoke drops its session's lease, a revoke-all every lease: the
-- owner of a session in flight is not known here until its fill.

-- KEYS: leases, session    ARGV: token
local function vp_session_lease(keys, args)
  arity('vp_session_lease', keys, args, 2, 1)
  if args[1] == '' then
    refuse('vp_session_lease', 'token', args[1], 'a non-empty lease token')
  end
  key_type('vp_session_lease', keys[1], 'hash')
  if redis.call('HLEN', keys[1]) >= MAX_LEASES then
    redis.call('DEL', keys[1])
  end
  redis.call('HSET', keys[1], keys[2], args[1])
  return 1
end

-- KEYS: session, owner's session set, leases    ARGV: owner, data, ttl_ms, token
-- A read-through fill: stored only while the reader's lease still holds its token,
-- so a session read from hosted before a revocation applied here is never cached.
-- Returns 1 stored, 0 refused.
local function vp_session_fill(keys, args)
  local fname = 'vp_session_fill'
  arity(fname, keys, args, 3, 4)
  session_args(fname, keys, args)
  if args[4] == '' then
    refuse(fname, 'token', args[4], 'a non-empty lease token')
  end
  key_type(fname, keys[3], 'hash')
  if redis.call('HGET', keys[3], keys[1]) ~= args[4] then
    return 0
  end
  redis.call('HDEL', keys[3], keys[1])
  session_store(keys, args)
  return 1
end

-- KEYS: session    ARGV: slide_ms (0: leave the expiry alone)
-- Returns {owner, data} or nil. Reads come first (a key of another type fails there);
-- the writes after them cannot fail.
local function vp_session_get(keys, args)
  arity('vp_session_get', keys, args, 1, 1)
  local slide = ms_arg('vp_session_get', 'slide_ms', args[1], 0)
  local fields = redis.call('HMGET', keys[1], 'owner', 'data', 'index')
  if not (fields[1] and fields[2] and fields[3]) then
    return false  -- no session (or a hash this library did not make: left alone)
  end
  if redis.call('SISMEMBER', fields[3], keys[1]) == 0 then
    redis.call('DEL', keys[1])
    return false
  end
  if slide > 0 then
    redis.call('PEXPIRE', keys[1], args[1])
  end
  return {fields[1], fields[2]}
end

-- KEYS: session, leases    ARGV: -
-- SREM is the first write: an index of another type fails it before anything changes.
local function vp_session_revoke(keys, args)
  arity('vp_session_revoke', keys, args, 2, 0)
  key_type('vp_session_revoke', keys[2], 'hash')
  local index = redis.call('HGET', keys[1], 'index')
  if index then
    redis.call('SREM', index, keys[1])
  end
  redis.call('HDEL', keys[2], keys[1])
  return redis.call('DEL', keys[1])
end

-- KEYS: owner's session set, leases    ARGV: -
local function vp_session_revoke_all(keys, args)
  arity('vp_session_revoke_all', keys, args, 2, 0)
  key_type('vp_session_revoke_all', keys[1], 'set')
  key_type('vp_session_revoke_all', keys[2], 'hash')
  local revoked = 0
  for _, session in ipairs(redis.call('SMEMBERS', keys[1])) do
    revoked = revoked + redis.call('DEL', session)
  end
  redis.call('DEL', keys[1], keys[2])
  return revoked
end

-- Message queue --------------------------------------------------------------
-- The pending list carries whole envelopes (key and body), so a message can
-- never be lost to the msg: LRU bound; the msg: record is the readable copy.
-- Workers BLMOVE pending -> processing (RIGHT -> LEFT: first in, first out).
-- Each delivery is a distinct envelope: recovery puts a job back with its retry
-- count in it (`{"key":..,"body":..,"retry":N}`), so a late ack by the worker it
-- was taken from matches nothing. `<msg zset>:deliveries` counts, per message, its
-- envelopes in pending and processing; an ack drops the msg: record only when it
-- removes the last one.

local function envelope_head(key)
  return '{"key":"' .. key .. '","body":'
end

local function deliveries_of(zset)
  return zset .. ':deliveries'
end

-- The next delivery of an envelope: its retry count one up.
local function redelivered(envelope)
  local retry = string.match(envelope, ',"retry":(%d+)}$')
  if retry == nil then
    return string.sub(envelope, 1, -2) .. ',"retry":1}'
  end
  local head = string.sub(envelope, 1, -(#retry + 2))
  return head .. string.format('%d', tonumber(retry) + 1) .. '}'
end

-- KEYS: lru zset, clock, msg record, pending    ARGV: envelope, body, ttl_ms, cap
-- The envelope must be exactly {"key":"<msg record>","body":<body>}: the queue entry
-- and the readable copy can never disagree.
local function vp_queue_enqueue(keys, args)
  local fname = 'vp_queue_enqueue'
  arity(fname, keys, args, 4, 4)
  json_object(fname, 'body', args[2])
  if args[1] ~= envelope_head(keys[3]) .. args[2] .. '}' then
    refuse(fname, 'envelope', args[1], '{"key":"<key 3>","body":<body>}')
  end
  ms_arg(fname, 'ttl_ms', args[3], 1)
  local cap = cap_arg(fname, args[4])
  lru_types(fname, keys[1])
  key_type(fname, keys[4], 'list')
  key_type(fname, deliveries_of(keys[1]), 'hash')
  lru_store(keys[1], keys[2], keys[3], args[2], args[3], cap)
  redis.call('HINCRBY', deliveries_of(keys[1]), keys[3], 1)
  return redis.call('LPUSH', keys[4], args[1])
end

-- KEYS: processing, taken stamps, lru zset, msg record    ARGV: envelope
-- Removes this delivery only (0 when recovery already put it back: the job comes
-- again); the msg: record goes with the message's last delivery.
local function vp_queue_ack(keys, args)
  local fname = 'vp_queue_ack'
  arity(fname, keys, args, 4, 1)
  local head = envelope_head(keys[4])
  if string.sub(args[1], 1, #head) ~= head then
    refuse(fname, 'envelope', args[1], 'an envelope of key 4: ' .. head .. '...}')
  end
  key_type(fname, keys[1], 'list')
  key_type(fname, keys[2], 'hash')
  key_type(fname, keys[3], 'zset')
  local deliveries = deliveries_of(keys[3])
  key_type(fname, deliveries, 'hash')
  local removed = redis.call('LREM', keys[1], 1, args[1])
  if removed == 0 then
    return 0
  end
  redis.call('HDEL', keys[2], args[1])
  if redis.call('HINCRBY', deliveries, keys[4], -1) <= 0 then
    redis.call('HDEL', deliveries, keys[4])
    redis.call('ZREM', keys[3], keys[4])
    redis.call('DEL', keys[4])
  end
  return removed
end

-- KEYS: processing, taken stamps, pending    ARGV: min_idle_ms
-- An entry is stamped the first time recovery sees it in processing and moved
-- back to the head of pending once it has sat there min_idle_ms since: a live
-- worker gets at least min_idle_ms per job, a dead worker's job comes back.
local function vp_queue_recover(keys, args)
  local fname = 'vp_queue_recover'
  arity(fname, keys, args, 3, 1)
  local min_idle = ms_arg(fname, 'min_idle_ms', args[1], 0)
  key_type(fname, keys[1], 'list')
  key_type(fname, keys[2], 'hash')
  key_type(fname, keys[3], 'list')
  local now = now_ms()
  local moved = 0
  for _, envelope in ipairs(redis.call('LRANGE', keys[1], 0, -1)) do
    local seen = tonumber(redis.call('HGET', keys[2], envelope))
    if seen == nil and min_idle > 0 then
      redis.call('HSET', keys[2], envelope, string.format('%d', now))
    elseif seen == nil or now - seen >= min_idle then
      redis.call('LREM', keys[1], 1, envelope)
      redis.call('HDEL', keys[2], envelope)
      redis.call('RPUSH', keys[3], redelivered(envelope))
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
redis.register_function('vp_lru_fill', vp_lru_fill)
redis.register_function('vp_lru_drain', vp_lru_drain)
redis.register_function('vp_lru_del', vp_lru_del)
redis.register_function('vp_session_create', vp_session_create)
redis.register_function('vp_session_lease', vp_session_lease)
redis.register_function('vp_session_fill', vp_session_fill)
redis.register_function('vp_session_get', vp_session_get)
redis.register_function('vp_session_revoke', vp_session_revoke)
redis.register_function('vp_session_revoke_all', vp_session_revoke_all)
redis.register_function('vp_queue_enqueue', vp_queue_enqueue)
redis.register_function('vp_queue_ack', vp_queue_ack)
redis.register_function('vp_queue_recover', vp_queue_recover)
