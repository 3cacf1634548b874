-- lib.lua: helpers prepended to every conftag queue script (see common/src/keys.rs).
-- KEYS[1] is always the job hash `conftag:v1:{<job>}:job`; every other key of the job is
-- derived from it, so a script touches exactly one Redis Cluster slot.
local JOB = KEYS[1]
local P = string.sub(JOB, 1, -5)

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function shard_key(id) return P .. ':shard:' .. id end
local function queue_key(stage) return P .. ':q:' .. stage end
local function leased_key(stage) return P .. ':leased:' .. stage end
local FAILED = P .. ':failed'
local EVENTS = P .. ':events'

-- Move a leased shard to `failed` or back to its stage queue (ready at `ready_at`),
-- spending one attempt. Returns the new state.
local function spend_attempt(id, stage, err, ready_at, permanent)
  local sk = shard_key(id)
  redis.call('ZREM', leased_key(stage), id)
  local attempts = redis.call('HINCRBY', sk, 'attempts', 1)
  local max_attempts = tonumber(redis.call('HGET', JOB, 'max_attempts'))
  redis.call('HSET', sk, 'token', '', 'worker', '', 'lease_until', 0, 'error', err)
  if permanent or attempts >= max_attempts then
    redis.call('HSET', sk, 'state', 'failed')
    redis.call('SADD', FAILED, id)
    return 'failed'
  end
  redis.call('HSET', sk, 'state', 'queued')
  redis.call('ZADD', queue_key(stage), ready_at, id)
  return 'queued'
end

-- Reclaim shards of `stage` whose lease lapsed before `now` (at most 100 per call). Each one
-- is counted in the job hash (`<stage>_leases_expired`), so a dead or cut-off worker shows.
local function reap(stage, now)
  local expired = redis.call('ZRANGEBYSCORE', leased_key(stage), '-inf', now, 'LIMIT', 0, 100)
  for _, id in ipairs(expired) do
    local worker = redis.call('HGET', shard_key(id), 'worker') or '?'
    redis.call('HINCRBY', JOB, stage .. '_leases_expired', 1)
    spend_attempt(id, stage, 'lease expired: worker ' .. worker .. ' stopped renewing', now, false)
  end
  return #expired
end

-- Check that `token` holds the lease of shard `id`. Returns the shard's stage, or nil
-- and a reason ('cancelled' | 'stale').
local function check_lease(id, token)
  if redis.call('HGET', JOB, 'state') == 'cancelled' then return nil, 'cancelled' end
  local f = redis.call('HMGET', shard_key(id), 'state', 'token', 'stage')
  if f[1] ~= 'leased' or f[2] ~= token or token == '' then return nil, 'stale' end
  return f[3], nil
end
