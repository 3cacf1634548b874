-- submit.lua: create a job and all its shards, queued for inference, in one step.
-- KEYS[1] job hash
-- ARGV[1] spec (canonical JSON)   ARGV[2] judge settings (JSON)   ARGV[3] rows total
-- ARGV[4] shard size              ARGV[5] max attempts
-- The rows were staged beforehand in P:rows (with a TTL); this script checks they are all
-- there and makes them permanent. Returns {'created'|'exists'|'conflict'|'rows_missing', detail}.
local spec, judge = ARGV[1], ARGV[2]
local rows, shard_size, max_attempts = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('EXISTS', JOB) == 1 then
  local existing = redis.call('HGET', JOB, 'spec')
  if existing == spec then return {'exists', ''} end
  return {'conflict', existing}
end
local staged = redis.call('HLEN', P .. ':rows')
if staged ~= rows then return {'rows_missing', tostring(staged)} end
redis.call('PERSIST', P .. ':rows')
local now = now_ms()
local shards = math.floor((rows + shard_size - 1) / shard_size)
redis.call('HSET', JOB, 'spec', spec, 'judge', judge, 'state', 'active', 'created_ms', now,
  'rows_total', rows, 'shards_total', shards, 'shard_size', shard_size,
  'max_attempts', max_attempts, 'shards_done', 0)
for i = 0, shards - 1 do
  local first = i * shard_size
  local last = math.min(first + shard_size, rows)
  redis.call('HSET', shard_key(i), 'start', first, 'end', last, 'stage', 'infer',
    'state', 'queued', 'attempts', 0, 'token', '', 'worker', '', 'lease_until', 0, 'error', '')
  redis.call('ZADD', queue_key('infer'), now, i)
end
return {'created', tostring(shards)}
