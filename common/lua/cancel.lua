-- cancel.lua: stop a job. Queued shards leave the queues; leased shards stay leased but
-- their holders' renewals answer "cancelled" and their completions are refused.
-- KEYS[1] job hash
-- Returns 1 (cancelled now), 0 (no such job or already cancelled).
if redis.call('EXISTS', JOB) == 0 then return 0 end
if redis.call('HGET', JOB, 'state') == 'cancelled' then return 0 end
redis.call('HSET', JOB, 'state', 'cancelled')
redis.call('DEL', queue_key('infer'), queue_key('judge'))
return 1
