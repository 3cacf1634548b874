-- renew.lua: extend the lease of a shard held by `token`.
-- KEYS[1] job hash
-- ARGV[1] shard id  ARGV[2] token  ARGV[3] lease length in ms
-- Returns 1 (renewed), 0 (lease lost: reclaimed or requeued), -1 (job cancelled).
-- A lapsed but not yet reclaimed lease is renewed: a slow, healthy worker keeps its shard.
local id, token, lease_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local stage, why = check_lease(id, token)
if not stage then
  if why == 'cancelled' then return -1 end
  return 0
end
local until_ms = now_ms() + lease_ms
redis.call('HSET', shard_key(id), 'lease_until', until_ms)
redis.call('ZADD', leased_key(stage), until_ms, id)
return 1
