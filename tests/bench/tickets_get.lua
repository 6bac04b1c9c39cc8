-- tests/bench/tickets_get.lua — wrk script: GET /api/v1/tickets/{id}, cycling through the ticket
-- ids listed in a file (one per line), each thread starting at a different place in the list.
--
--   wrk -t2 -c8 -d10s --latency -s tests/bench/tickets_get.lua http://HOST:PORT -- TOKEN ID_FILE

local threads = {}
local counter = 0

function setup(thread)
    counter = counter + 1
    thread:set("thread_no", counter)
    table.insert(threads, thread)
end

local ids = {}
local i = 0

function init(args)
    local token = args[1] or error("tickets_get.lua: need TOKEN ID_FILE after --")
    local file = args[2] or error("tickets_get.lua: need TOKEN ID_FILE after --")
    for line in io.lines(file) do
        if line:match("^%d+$") then
            table.insert(ids, line)
        end
    end
    if #ids == 0 then
        error("tickets_get.lua: no ids in " .. file)
    end
    -- Start the threads (bench_tickets.sh uses one or two) half the list apart.
    i = math.floor((thread_no - 1) * #ids / 2) % #ids
    wrk.method = "GET"
    wrk.headers["Authorization"] = "Bearer " .. token
    wrk.headers["Accept"] = "application/json"
end

function request()
    i = i % #ids + 1
    return wrk.format(nil, "/api/v1/tickets/" .. ids[i])
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
