-- Volley's shared rate limiter: GCRA for requests and tokens per minute, evaluated atomically
-- on the Redis server's clock. One call applies what a process has to report (refunds,
-- charges, an empty quota, a pause), then reserves send times for a batch of requests, in
-- order. The arithmetic is the same as the in-process limiter's (rate_limit/gcra.rs), in whole
-- microseconds; `store.rs` has a Rust model of this script for the unit tests, keep the two in
-- step (`replay.rs` replays calls to both, against a real Redis, and compares the replies).
--
-- KEYS[1]  the limiter's hash. Fields: r, t (the theoretical arrival time, TAT, of the request
--          and token buckets: when each is full again), until (no send before this), shift
--          (microseconds of pause ever added, so processes can push back what they already
--          reserved), epoch (when the hash was created: a new epoch means the state was lost).
--          Times are microseconds of the server's clock (`TIME`).
-- ARGV[1]  microseconds one request costs (0: requests are not limited)
-- ARGV[2]  how far the request TAT may run ahead of now before a request waits (microseconds)
-- ARGV[3]  microseconds one token costs (0: tokens are not limited)
-- ARGV[4]  the token tolerance
-- ARGV[5]  the epoch the caller saw last (0: none yet)
-- ARGV[6]  restore floor for r: the end of the caller's latest reservation, in microseconds
--          from now; applied only when the epoch changed (the state was lost, say by a
--          restart), so reservations still pending in the caller are not granted twice
-- ARGV[7]  restore floor for t
-- ARGV[8]  requests to give back (reserved but never sent)
-- ARGV[9]  tokens to give back (unsent, or unused by settlement)
-- ARGV[10] tokens to charge (usage above the estimate)
-- ARGV[11] empty flags: 1 the request bucket, 2 the token bucket (the provider said so)
-- ARGV[12] pause: no send for this many microseconds from now (a 429's Retry-After), 0 none
-- ARGV[13] how long the hash outlives its last deadline, in milliseconds
-- ARGV[14] n, the number of reservations; ARGV[15 + 2i], ARGV[16 + 2i]: the request and
--          token cost of reservation i
-- Returns {epoch, shift, wait_1, ..., wait_n}: waits in microseconds from now.

-- Redis 5 and later replicate a script by its effects, which `TIME` needs; older servers have
-- to be asked (newer ones keep the call as a no-op).
if redis.replicate_commands then redis.replicate_commands() end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local key = KEYS[1]

local r_interval = tonumber(ARGV[1])
local r_tolerance = tonumber(ARGV[2])
local t_interval = tonumber(ARGV[3])
local t_tolerance = tonumber(ARGV[4])

local state = redis.call('HMGET', key, 'r', 't', 'until', 'shift', 'epoch')
local r = tonumber(state[1]) or 0
local t = tonumber(state[2]) or 0
local paused = tonumber(state[3]) or 0
local shift = tonumber(state[4]) or 0
local epoch = tonumber(state[5])
if epoch == nil then
  -- New, expired after a quiet spell, or lost with a restart: full buckets.
  epoch = now
  r, t, paused, shift = 0, 0, 0, 0
end
if epoch ~= tonumber(ARGV[5]) then
  r = math.max(r, now + tonumber(ARGV[6]))
  t = math.max(t, now + tonumber(ARGV[7]))
end

-- Microseconds `cost` units take to refill, rounded up so rounding never loosens the limit.
local function span(cost, interval)
  return math.ceil(cost * interval)
end

-- Corrections first: they are about requests sent before the ones reserved below.
local give_r = tonumber(ARGV[8])
local give_t = tonumber(ARGV[9])
local charge_t = tonumber(ARGV[10])
if r_interval > 0 and give_r > 0 then
  r = math.max(r - span(give_r, r_interval), now)
end
if t_interval > 0 then
  if give_t > 0 then
    t = math.max(t - span(give_t, t_interval), now)
  end
  if charge_t > 0 then
    t = math.max(t, now) + span(charge_t, t_interval)
  end
end

local empty = tonumber(ARGV[11])
if r_interval > 0 and empty % 2 == 1 then
  r = math.max(r, now + r_tolerance)
end
if t_interval > 0 and empty >= 2 then
  t = math.max(t, now + t_tolerance)
end

local pause = tonumber(ARGV[12])
if pause > 0 then
  local stop = now + pause
  local from = math.max(now, paused)
  if stop > from then
    local by = stop - from
    paused = stop
    if r_interval > 0 then r = math.max(r, now) + by end
    if t_interval > 0 then t = math.max(t, now) + by end
    shift = shift + by
  end
end

-- The earliest time at or after `now` a cost conforms to one bucket: once the bucket holds
-- it, or, for a cost above the burst, once the bucket is full (which leaves it in debt).
local function earliest(tat, cost, interval, tolerance)
  local s = span(cost, interval)
  return math.max(math.max(tat, now) + s - math.max(tolerance, s), now)
end

local n = tonumber(ARGV[14])
local reply = {epoch, shift}
for i = 0, n - 1 do
  local cost_r = tonumber(ARGV[15 + 2 * i])
  local cost_t = tonumber(ARGV[16 + 2 * i])
  local at = math.max(now, paused)
  if r_interval > 0 then at = math.max(at, earliest(r, cost_r, r_interval, r_tolerance)) end
  if t_interval > 0 then at = math.max(at, earliest(t, cost_t, t_interval, t_tolerance)) end
  -- Both buckets record the send at the same time, the latest either allows.
  if r_interval > 0 then r = math.max(r, at) + span(cost_r, r_interval) end
  if t_interval > 0 then t = math.max(t, at) + span(cost_t, t_interval) end
  reply[#reply + 1] = at - now
end

-- '%.0f': Lua's own number formatting keeps only 14 digits, too few for microseconds.
redis.call('HSET', key,
  'r', string.format('%.0f', r),
  't', string.format('%.0f', t),
  'until', string.format('%.0f', paused),
  'shift', string.format('%.0f', shift),
  'epoch', string.format('%.0f', epoch))
local horizon = math.max(r, t, paused) - now
local ttl = math.max(math.ceil(horizon / 1000), 0) + tonumber(ARGV[13])
redis.call('PEXPIRE', key, string.format('%.0f', ttl))
return reply
