-- complete.lua: store a shard's results and hand it to its next stage, atomically.
-- KEYS[1] job hash
-- ARGV[1] shard id  ARGV[2] token  ARGV[3] stage being completed (infer|judge)
-- ARGV[4] counters (JSON object name -> integer, names prefixed by the stage)
-- ARGV[5..] pairs of (row index, row record JSON) for the stage's result hash
--           (P:pred for infer, P:tagged for judge)
-- infer -> shard queued for judge; judge -> shard done. Counters are added to the job hash
-- and remembered on the shard (as s:<name>) so a requeue can subtract them again.
-- Returns 1 (stored), 0 (stale token: refused, nothing written), -1 (job cancelled).
local id, token, stage = ARGV[1], ARGV[2], ARGV[3]
local held, why = check_lease(id, token)
if not held then
  if why == 'cancelled' then return -1 end
  return 0
end
if held ~= stage then return 0 end
local sk = shard_key(id)
local results = P .. (stage == 'infer' and ':pred' or ':tagged')
for i = 5, #ARGV, 2 do
  redis.call('HSET', results, ARGV[i], ARGV[i + 1])
end
local counters = cjson.decode(ARGV[4])
local rows, tokens = 0, 0
for name, value in pairs(counters) do
  redis.call('HINCRBY', JOB, name, value)
  redis.call('HINCRBY', sk, 's:' .. name, value)
  if name == stage .. '_rows' then rows = value end
  if name == 'infer_completion_tokens' then tokens = value end
end
local now = now_ms()
redis.call('ZREM', leased_key(stage), id)
redis.call('HDEL', sk, 'started_ms')
if stage == 'infer' then
  redis.call('HSET', sk, 'stage', 'judge', 'state', 'queued', 'attempts', 0, 'token', '',
    'worker', '', 'lease_until', 0, 'error', '')
  redis.call('ZADD', queue_key('judge'), now, id)
else
  redis.call('HSET', sk, 'stage', 'done', 'state', 'done', 'token', '', 'worker', '',
    'lease_until', 0, 'error', '')
  redis.call('HINCRBY', JOB, 'shards_done', 1)
end
redis.call('ZADD', EVENTS, now, token .. '|' .. stage .. '|' .. rows .. '|' .. tokens)
redis.call('ZREMRANGEBYSCORE', EVENTS, '-inf', now - 600000)
return 1
