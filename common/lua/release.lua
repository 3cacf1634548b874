-- release.lua: a draining worker gives a shard back without spending an attempt.
-- KEYS[1] job hash
-- ARGV[1] shard id  ARGV[2] token
-- Returns 1 (released), 0 (not held by this token any more).
local id, token = ARGV[1], ARGV[2]
local stage = check_lease(id, token)
if not stage then return 0 end
unlease(id, stage, now_ms())
return 1
