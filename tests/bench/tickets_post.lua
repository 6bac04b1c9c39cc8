-- tests/bench/tickets_post.lua — wrk script: POST /api/v1/tickets, every request a new ticket for
-- a new customer (unique e-mail and subject per request, across threads and runs).
--
--   wrk -t2 -c8 -d10s --latency -s tests/bench/tickets_post.lua http://HOST:PORT \
--       -- TOKEN RUN_TAG QUEUE_IDS
--
-- TOKEN: an API token (Authorization: Bearer). RUN_TAG: a string unique to this wrk run (the
-- request counter restarts in every run). QUEUE_IDS: comma-separated queue ids, used in turn;
-- empty = no queue_id (the API channel's default queue).

local threads = {}
local counter = 0

function setup(thread)
    counter = counter + 1
    thread:set("thread_no", counter)
    table.insert(threads, thread)
end

local token, tag
local queues = {}
local n = 0

function init(args)
    token = args[1] or error("tickets_post.lua: need TOKEN RUN_TAG QUEUE_IDS after --")
    tag = args[2] or tostring(os.time())
    for q in string.gmatch(args[3] or "", "%d+") do
        table.insert(queues, q)
    end
    wrk.method = "POST"
    wrk.path = "/api/v1/tickets"
    wrk.headers["Authorization"] = "Bearer " .. token
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Accept"] = "application/json"
end

function request()
    n = n + 1
    local id = string.format("%s-%d-%d", tag, thread_no, n)
    local queue = ""
    if #queues > 0 then
        queue = string.format(',"queue_id":%s', queues[(n % #queues) + 1])
    end
    local body = string.format(
        '{"subject":"Order %s has not arrived","text":"Hello, I ordered a kettle two weeks ago ' ..
        '(order %s) and it still has not arrived. Could you check where it is? Thanks.",' ..
        '"customer":{"email":"c-%s@bench.example","name":"Bench Customer %s"}%s}',
        id, id, id, id, queue)
    return wrk.format(nil, nil, nil, body)
end

-- Status counts, so a run that made no tickets is visible (wrk only counts "non-2xx").
statuses = {} -- global: done() reads it from each thread (thread:get)

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    -- Each thread has its own Lua state; the counts live in the threads.
    local total = {}
    for _, t in ipairs(threads) do
        local s = t:get("statuses")
        if s then
            for k, v in pairs(s) do
                total[k] = (total[k] or 0) + v
            end
        end
    end
    local parts = {}
    for k, v in pairs(total) do
        table.insert(parts, string.format("%s=%d", k, v))
    end
    table.sort(parts)
    io.write("status: " .. table.concat(parts, " ") .. "\n")
end
