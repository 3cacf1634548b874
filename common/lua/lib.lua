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
  redis.call('HDEL', sk, 'started_ms')
  if permanent or attempts >= max_attempts then
    redis.call('HSET', sk, 'state', 'failed')
    redis.call('SADD', FAILED, id)
    return 'failed'
  end
  redis.call('HSET', sk, 'state', 'queued')
  redis.call('ZADD', queue_key(stage), ready_at, id)
  return 'queued'
end

-- Put a leased shard back in its stage queue (ready at `ready_at`) without spending an
-- attempt: a release, or a lapsed lease of a shard whose processing never started.
local function unlease(id, stage, ready_at)
  local sk = shard_key(id)
  redis.call('ZREM', leased_key(stage), id)
  redis.call('HSET', sk, 'state', 'queued', 'token', '', 'worker', '', 'lease_until', 0)
  redis.call('HDEL', sk, 'started_ms')
  redis.call('ZADD', queue_key(stage), ready_at, id)
end

-- Whether the lease a shard holds started processing: claim.lua sets `started_ms` to 0 and
-- start.lua to the time its holder handed the first rows to its engine. A lease without the
-- field was taken by a claim.lua from before start marks (an older worker during a rolling
-- upgrade, which never marks): it keeps the old rule, every lapse spends an attempt.
local function lease_started(id)
  local v = redis.call('HGET', shard_key(id), 'started_ms')
  if not v then return true end
  return (tonumber(v) or 0) > 0
end

-- Reclaim shards of `stage` whose lease lapsed before `now` (at most 100 per call). Each one
-- is counted in the job hash (`<stage>_leases_expired`), so a dead or cut-off worker shows.
-- Only a shard that was being processed spends an attempt (so a shard that kills every
-- worker that runs it still ends `failed`); one that waited unstarted in its holder's
-- look-ahead goes back to the queue for free and is also counted in
-- `<stage>_leases_lapsed_unstarted`: a preempted worker costs no shard an attempt it did not
-- start.
local function reap(stage, now)
  local expired = redis.call('ZRANGEBYSCORE', leased_key(stage), '-inf', now, 'LIMIT', 0, 100)
  for _, id in ipairs(expired) do
    local worker = redis.call('HGET', shard_key(id), 'worker') or '?'
    redis.call('HINCRBY', JOB, stage .. '_leases_expired', 1)
    if lease_started(id) then
      spend_attempt(id, stage, 'lease expired: worker ' .. worker .. ' stopped renewing', now, false)
    else
      redis.call('HINCRBY', JOB, stage .. '_leases_lapsed_unstarted', 1)
      unlease(id, stage, now)
    end
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
