-- tests/bench/webform_post.lua — wrk script for tests/bench/bench_webform.sh: every request a new
-- ticket for a new customer (unique e-mail and subject), either through the public web form
-- endpoint or, for comparison, through the agent API.
--
--   wrk -t2 -c8 -d10s --latency -s tests/bench/webform_post.lua http://HOST:PORT \
--       -- form FORM_TOKEN RUN_TAG
--   wrk ... -- api API_TOKEN RUN_TAG
--
-- form: POST /api/v1/public/requests (JSON) with a form token from GET /api/v1/public/form
-- (tokens are stateless, one serves every request); api: POST /api/v1/tickets with a Bearer token.

local threads = {}
local counter = 0

function setup(thread)
    counter = counter + 1
    thread:set("thread_no", counter)
    table.insert(threads, thread)
end

local mode, token, tag
local n = 0

function init(args)
    mode = args[1] or error("webform_post.lua: need form|api TOKEN RUN_TAG after --")
    token = args[2] or error("webform_post.lua: need a token")
    tag = args[3] or tostring(os.time())
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Accept"] = "application/json"
    if mode == "api" then
        wrk.path = "/api/v1/tickets"
        wrk.headers["Authorization"] = "Bearer " .. token
    else
        wrk.path = "/api/v1/public/requests"
    end
end

local TEXT = "Hello, I ordered a kettle two weeks ago and it still has not arrived. " ..
             "Could you check where it is? Thanks."

function request()
    n = n + 1
    local id = string.format("%s-%d-%d", tag, thread_no, n)
    local body
    if mode == "api" then
        body = string.format('{"subject":"Order %s has not arrived","text":"%s",' ..
            '"customer":{"email":"c-%s@bench.example","name":"Bench Customer %s"}}',
            id, TEXT, id, id)
    else
        body = string.format('{"name":"Bench Customer %s","email":"w-%s@bench.example",' ..
            '"subject":"Order %s has not arrived","category":"general","description":"%s",' ..
            '"form_token":"%s","website":""}', id, id, id, TEXT, token)
    end
    return wrk.format(nil, nil, nil, body)
end

statuses = {} -- global: done() reads it from each thread (thread:get)

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
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
