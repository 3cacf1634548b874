-- fail.lua: a worker reports that processing a shard failed.
-- KEYS[1] job hash
-- ARGV[1] shard id  ARGV[2] token  ARGV[3] error message  ARGV[4] retry delay in ms
-- ARGV[5] '1' when the error is permanent (no retry)
-- Spends one attempt: queued again after the delay, or `failed` once attempts are used up.
-- Every reported failure is counted in the job hash (`<stage>_attempts_failed`).
-- Returns 'queued' | 'failed' | 'stale' | 'cancelled'.
local id, token, err, delay, permanent = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5] == '1'
local stage, why = check_lease(id, token)
if not stage then return why end
redis.call('HSET', JOB, 'last_error', 'shard ' .. id .. ': ' .. err)
redis.call('HINCRBY', JOB, stage .. '_attempts_failed', 1)
return spend_attempt(id, stage, err, now_ms() + delay, permanent)
