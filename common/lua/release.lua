-- release.lua: a draining worker gives a shard back without spending an attempt.
-- KEYS[1] job hash
-- ARGV[1] shard id  ARGV[2] token
-- Returns 1 (released), 0 (not held by this token any more).
local id, token = ARGV[1], ARGV[2]
local stage = check_lease(id, token)
if not stage then return 0 end
redis.call('ZREM', leased_key(stage), id)
redis.call('HSET', shard_key(id), 'state', 'queued', 'token', '', 'worker', '', 'lease_until', 0)
redis.call('ZADD', queue_key(stage), now_ms(), id)
return 1
