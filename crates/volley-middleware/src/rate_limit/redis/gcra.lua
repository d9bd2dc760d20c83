-- Volley's shared rate limiter: GCRA for requests, tokens, input tokens and output tokens per
-- minute, evaluated atomically on the Redis server's clock. One call applies what a process
-- has to report (refunds, charges, empty quotas, a pause), then reserves send times for a
-- batch of requests, in order. The arithmetic is the same as the in-process limiter's
-- (rate_limit/gcra.rs), in whole microseconds; `store.rs` has a Rust model of this script for
-- the unit tests, keep the two in step (`replay.rs` replays calls to both, against a real
-- Redis, and compares the replies).
--
-- The four buckets ("dimensions") are, in this order everywhere below: requests (field r),
-- tokens (t), input tokens (i, Anthropic's ITPM) and output tokens (o, OTPM). A script that
-- knows only r and t (an older Volley) leaves i and o alone, so both can share a key.
--
-- KEYS[1]  the limiter's hash. Fields: r, t, i, o (the theoretical arrival time, TAT, of each
--          bucket: when it is full again), until (no send before this), shift (microseconds
--          of pause ever added, so processes can push back what they already reserved),
--          epoch (when the hash was created: a new epoch means the state was lost), lr, lt, li
--          and lo (the limits per minute learned from the provider's headers, by whichever
--          process saw them last). Times are microseconds of the server's clock (`TIME`).
-- ARGV[2d - 1], ARGV[2d] for d = 1..4: microseconds one unit of dimension d costs (0: not
--          limited; -1: the limit learned, in lr, lt, li or lo, if any), and how far its TAT
--          may run ahead of now before a request waits
-- ARGV[9]  the epoch the caller saw last (0: none yet)
-- ARGV[9 + d]  restore floor of dimension d: the end of the caller's latest reservation, in
--          microseconds from now; applied only when the epoch changed (the state was lost, say
--          by a restart), so reservations still pending in the caller are not granted twice
-- ARGV[13 + d] units of dimension d to give back (reserved but never sent, or unused)
-- ARGV[17 + d] units of dimension d to charge (usage above the estimate)
-- ARGV[22] empty flags, bit d - 1 for dimension d (the provider said the quota is used up)
-- ARGV[23] pause: no send for this many microseconds from now (a 429's Retry-After), 0 none
-- ARGV[24] how long the hash outlives its last deadline, in milliseconds (a learned limit
--          goes with it: after a quiet spell the next process learns it again)
-- ARGV[25] the headroom and ARGV[26] the jitter margin in microseconds, for learned limits
-- ARGV[26 + d] the limit per minute of dimension d the caller knows as learned (0: none)
-- ARGV[31] flags, bit d - 1 when the caller has just learned dimension d's value from a
--          header (it replaces the shared one); otherwise a value only restores a state that
--          was lost (a new epoch)
-- ARGV[32] n, the number of reservations; ARGV[33 + 4j + d - 1]: the cost of reservation j
--          (from 0) in dimension d
-- Returns {epoch, shift, lr, lt, li, lo, wait_1, ..., wait_n}: the learned limits (0: none),
-- and waits in microseconds from now.

-- Redis 5 and later replicate a script by its effects, which `TIME` needs; older servers have
-- to be asked (newer ones keep the call as a no-op).
if redis.replicate_commands then redis.replicate_commands() end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local key = KEYS[1]
local fields = {'r', 't', 'i', 'o'}

local state = redis.call('HMGET', key, 'r', 't', 'i', 'o', 'until', 'shift', 'epoch',
  'lr', 'lt', 'li', 'lo')
local tat = {}
for d = 1, 4 do tat[d] = tonumber(state[d]) or 0 end
local paused = tonumber(state[5]) or 0
local shift = tonumber(state[6]) or 0
local epoch = tonumber(state[7])
local learned = {}
for d = 1, 4 do learned[d] = tonumber(state[7 + d]) or 0 end
if epoch == nil then
  -- New, expired after a quiet spell, or lost with a restart: full buckets.
  epoch = now
  tat = {0, 0, 0, 0}
  paused, shift = 0, 0
  learned = {0, 0, 0, 0}
end
local lost = epoch ~= tonumber(ARGV[9])
if lost then
  for d = 1, 4 do tat[d] = math.max(tat[d], now + tonumber(ARGV[9 + d])) end
end

-- Learned limits: a value just read from a header replaces the shared one; a known one
-- restores a lost state.
local fresh = tonumber(ARGV[31])
for d = 1, 4 do
  local known = tonumber(ARGV[26 + d])
  if known > 0 and (math.floor(fresh / 2 ^ (d - 1)) % 2 == 1 or (lost and learned[d] == 0)) then
    learned[d] = known
  end
end

-- The limits in force: given ones as the caller computed them, learned ones as the caller's
-- `Dim::new` computes them (a burst of a second's worth, the headroom, the jitter margin).
local headroom = tonumber(ARGV[25])
local jitter = tonumber(ARGV[26])
local interval, tolerance = {}, {}
for d = 1, 4 do
  interval[d] = tonumber(ARGV[2 * d - 1])
  tolerance[d] = tonumber(ARGV[2 * d])
  if interval[d] < 0 then
    local limit = learned[d]
    if limit > 0 then
      local burst = math.max(math.floor(limit / 60), 1)
      local nominal = 60e6 / limit
      interval[d] = nominal / (1 - headroom)
      tolerance[d] = math.max(math.floor(burst * nominal) - jitter, 0)
    else
      interval[d] = 0
      tolerance[d] = 0
    end
  end
end

-- Microseconds `cost` units take to refill, rounded up so rounding never loosens the limit.
local function span(cost, d)
  return math.ceil(cost * interval[d])
end

-- Corrections first: they are about requests sent before the ones reserved below.
local empty = tonumber(ARGV[22])
for d = 1, 4 do
  if interval[d] > 0 then
    local give = tonumber(ARGV[13 + d])
    local charge = tonumber(ARGV[17 + d])
    if give > 0 then tat[d] = math.max(tat[d] - span(give, d), now) end
    if charge > 0 then tat[d] = math.max(tat[d], now) + span(charge, d) end
    if math.floor(empty / 2 ^ (d - 1)) % 2 == 1 then
      tat[d] = math.max(tat[d], now + tolerance[d])
    end
  end
end

local pause = tonumber(ARGV[23])
if pause > 0 then
  local stop = now + pause
  local from = math.max(now, paused)
  if stop > from then
    local by = stop - from
    paused = stop
    for d = 1, 4 do
      if interval[d] > 0 then tat[d] = math.max(tat[d], now) + by end
    end
    shift = shift + by
  end
end

-- The earliest time at or after `now` a cost conforms to one bucket: once the bucket holds
-- it, or, for a cost above the burst, once the bucket is full (which leaves it in debt).
local function earliest(d, cost)
  local s = span(cost, d)
  return math.max(math.max(tat[d], now) + s - math.max(tolerance[d], s), now)
end

local n = tonumber(ARGV[32])
local reply = {epoch, shift, learned[1], learned[2], learned[3], learned[4]}
for j = 0, n - 1 do
  local base = 32 + 4 * j
  local at = math.max(now, paused)
  for d = 1, 4 do
    if interval[d] > 0 then at = math.max(at, earliest(d, tonumber(ARGV[base + d]))) end
  end
  -- Every bucket records the send at the same time, the latest any of them allows.
  for d = 1, 4 do
    if interval[d] > 0 then tat[d] = math.max(tat[d], at) + span(tonumber(ARGV[base + d]), d) end
  end
  reply[#reply + 1] = at - now
end

-- '%.0f': Lua's own number formatting keeps only 14 digits, too few for microseconds.
local horizon = paused
local update = {}
for d = 1, 4 do
  -- A dimension this caller does not limit keeps what another process wrote.
  if interval[d] > 0 then
    update[#update + 1] = fields[d]
    update[#update + 1] = string.format('%.0f', tat[d])
  end
  horizon = math.max(horizon, tat[d])
end
for d = 1, 4 do
  if learned[d] > 0 then
    update[#update + 1] = 'l' .. fields[d]
    update[#update + 1] = string.format('%.0f', learned[d])
  end
end
redis.call('HSET', key,
  'until', string.format('%.0f', paused),
  'shift', string.format('%.0f', shift),
  'epoch', string.format('%.0f', epoch),
  unpack(update))
local ttl = math.max(math.ceil((horizon - now) / 1000), 0) + tonumber(ARGV[24])
redis.call('PEXPIRE', key, string.format('%.0f', ttl))
return reply
