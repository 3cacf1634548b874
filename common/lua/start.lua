-- start.lua: the holder of a lease begins processing the shard (its first rows go to the
-- engine). From now on a lapse of this lease spends an attempt; before, a lapse (a preempted
-- worker's look-ahead) puts the shard back for free (see `reap` in lib.lua).
-- KEYS[1] job hash
-- ARGV[1] shard id  ARGV[2] token
-- Idempotent: a second call keeps the first time. A lapsed but not yet reclaimed lease is
-- marked like renew.lua renews it.
-- Returns 1 (started), 0 (stale token: lease lost), -1 (job cancelled).
local id, token = ARGV[1], ARGV[2]
local stage, why = check_lease(id, token)
if not stage then
  if why == 'cancelled' then return -1 end
  return 0
end
local sk = shard_key(id)
if (tonumber(redis.call('HGET', sk, 'started_ms') or '0') or 0) == 0 then
  redis.call('HSET', sk, 'started_ms', now_ms())
end
return 1
