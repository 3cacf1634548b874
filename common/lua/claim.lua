-- claim.lua: lease the next ready shard of one stage of a job.
-- KEYS[1] job hash
-- ARGV[1] stage (infer|judge)  ARGV[2] fencing token (fresh uuid)  ARGV[3] worker id
-- ARGV[4] lease length in ms
-- First reclaims lapsed leases of both stages (so a dead worker's shards come back within
-- one lease period of any claim), then pops the oldest ready shard.
-- The new lease starts unstarted (`started_ms` 0): until its holder marks it started
-- (start.lua), a lapse of it spends no attempt (see `reap` in lib.lua).
-- Returns false, or {shard id, first row, end row (exclusive), attempts so far}.
local stage, token, worker, lease_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('HGET', JOB, 'state') ~= 'active' then return false end
local now = now_ms()
reap('infer', now)
reap('judge', now)
local ids = redis.call('ZRANGEBYSCORE', queue_key(stage), '-inf', now, 'LIMIT', 0, 1)
if #ids == 0 then return false end
local id = ids[1]
local sk = shard_key(id)
redis.call('ZREM', queue_key(stage), id)
redis.call('HSET', sk, 'state', 'leased', 'token', token, 'worker', worker,
  'lease_until', now + lease_ms, 'claimed_ms', now, 'started_ms', 0)
redis.call('ZADD', leased_key(stage), now + lease_ms, id)
local f = redis.call('HMGET', sk, 'start', 'end', 'attempts')
return {id, f[1], f[2], f[3]}
