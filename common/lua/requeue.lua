-- requeue.lua: an operator puts shards back in a queue.
-- KEYS[1] job hash
-- ARGV[1] selection: 'failed' | 'stuck' | 'all' | 'ids'
-- ARGV[2] target stage: 'infer' | 'judge' | '' (= the stage each shard is in)
-- ARGV[3] '1' = force (also take back live leases and done shards)
-- ARGV[4] judge settings JSON to store, or '' to keep them
-- ARGV[5..] shard ids (selection 'ids')
-- A requeued shard gets a clean attempt count; its old lease token stops being valid, so a
-- late completion by its previous holder is refused. Counters and result rows of the stages
-- that will run again are removed. Returns {requeued count, skipped ids...}.
local selection, target, force, judge = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4]
local now = now_ms()
if judge ~= '' then
  redis.call('HSET', JOB, 'judge', judge)
  redis.call('HDEL', JOB, 'judge_paused')
end
redis.call('HSET', JOB, 'state', 'active')

-- Remove what the stages that run again produced: counters, result rows, a judge batch id.
local function forget(id, sk, from_stage)
  local fields = redis.call('HGETALL', sk)
  local start_row = tonumber(redis.call('HGET', sk, 'start'))
  local end_row = tonumber(redis.call('HGET', sk, 'end'))
  for i = 1, #fields, 2 do
    local name = fields[i]
    if string.sub(name, 1, 2) == 's:' then
      local counter = string.sub(name, 3)
      if from_stage == 'infer' or string.sub(counter, 1, 6) == 'judge_' then
        redis.call('HINCRBY', JOB, counter, -tonumber(fields[i + 1]))
        redis.call('HDEL', sk, name)
      end
    end
  end
  redis.call('DEL', P .. ':batch:' .. id)
  for row = start_row, end_row - 1 do
    redis.call('HDEL', P .. ':tagged', row)
    redis.call('HDEL', P .. ':jcache', row)
    if from_stage == 'infer' then redis.call('HDEL', P .. ':pred', row) end
  end
end

local function requeue(id)
  local sk = shard_key(id)
  local f = redis.call('HMGET', sk, 'state', 'stage', 'lease_until')
  local state, stage = f[1], f[2]
  if not state then return false end
  if state == 'leased' and not force and tonumber(f[3]) > now then return false end
  if state == 'done' and not force then return false end
  local to = target
  if to == '' then to = (stage == 'done') and 'judge' or stage end
  if to == 'judge' and stage == 'infer' then return false end
  if state == 'leased' then redis.call('ZREM', leased_key(stage), id) end
  if state == 'queued' then redis.call('ZREM', queue_key(stage), id) end
  if state == 'failed' then redis.call('SREM', FAILED, id) end
  if state == 'done' then redis.call('HINCRBY', JOB, 'shards_done', -1) end
  if stage == 'done' or to == 'infer' then forget(id, sk, to) end
  redis.call('HSET', sk, 'stage', to, 'state', 'queued', 'attempts', 0, 'token', '',
    'worker', '', 'lease_until', 0, 'error', '')
  redis.call('HDEL', sk, 'started_ms')
  redis.call('ZADD', queue_key(to), now, id)
  return true
end

local ids = {}
if selection == 'failed' then
  ids = redis.call('SMEMBERS', FAILED)
elseif selection == 'stuck' then
  for _, st in ipairs({'infer', 'judge'}) do
    local upto = force and '+inf' or now
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', leased_key(st), '-inf', upto)) do
      table.insert(ids, id)
    end
  end
  force = true
elseif selection == 'all' then
  local n = tonumber(redis.call('HGET', JOB, 'shards_total'))
  for i = 0, n - 1 do table.insert(ids, tostring(i)) end
else
  for i = 5, #ARGV do table.insert(ids, ARGV[i]) end
end
local count, skipped = 0, {}
for _, id in ipairs(ids) do
  if requeue(id) then count = count + 1 else table.insert(skipped, id) end
end
local out = {count}
for _, id in ipairs(skipped) do table.insert(out, id) end
return out
