-- batch_paid.lua: add a judge Batch API batch's price to the job's live spend, once per batch.
-- KEYS[1] job hash
-- ARGV[1] batch id  ARGV[2] price (micro-USD)
-- Returns 1 (added), 0 (this batch was already added).
if redis.call('HSETNX', P .. ':batchpaid', ARGV[1], ARGV[2]) == 1 then
  redis.call('HINCRBY', JOB, 'judge_paid_micro_usd', ARGV[2])
  return 1
end
return 0
