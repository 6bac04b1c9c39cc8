-- tests/bench/wechat_push.lua — wrk script: replay pre-signed WeChat pushes (wechat_gen.py).
--
--   wrk -t2 -c8 -d10s --latency -s tests/bench/wechat_push.lua http://HOST:PORT -- REQUESTS_FILE
--
-- Each wrk thread takes every n-th line of the file (n = number of threads), so no two threads
-- send the same push; a thread that runs out starts over (those repeats are WeChat-style
-- retries, answered from the dedupe path) and done() reports how many there were.

local threads = {}
local counter = 0

function setup(thread)
    counter = counter + 1
    thread:set("thread_no", counter)
    table.insert(threads, thread)
end

local reqs = {}
local i = 0
wraps = 0

function init(args)
    local file = args[1] or error("wechat_push.lua: need REQUESTS_FILE after --")
    local n, k = 0, 0
    local headers = {["Content-Type"] = "text/xml"}
    -- thread_no and the thread count arrive through setup(); the count is the highest number.
    local nthreads = tonumber(os.getenv("BENCH_WRK_THREADS") or "1")
    for line in io.lines(file) do
        n = n + 1
        if (n - 1) % nthreads == (thread_no - 1) then
            local tab = string.find(line, "\t", 1, true)
            k = k + 1
            reqs[k] = wrk.format("POST", string.sub(line, 1, tab - 1), headers,
                                 string.sub(line, tab + 1))
        end
    end
    if k == 0 then
        error("wechat_push.lua: no requests for thread " .. thread_no)
    end
end

function request()
    i = i + 1
    if i > #reqs then
        i = 1
        wraps = wraps + 1
    end
    return reqs[i]
end

function done(summary, latency, requests)
    local w = 0
    for _, t in ipairs(threads) do
        w = w + (tonumber(t:get("wraps")) or 0)
    end
    io.write(string.format("wrapped: %d\n", w))
end
