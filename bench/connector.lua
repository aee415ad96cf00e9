-- bench/connector.lua — wrk script for bench/connector.sh: the connector's two hot routes
-- with the API keys of several pharmacies.
--   BENCH_CONN_MODE=list  GET /api/inventory/?page_size=50
--   BENCH_CONN_MODE=sale  POST /api/sales/ {"inventory_item": <id>, "quantity": 1}, the item
--                         uniform among the 10,000 (BENCH_CONN_ITEMS) of the key's pharmacy
-- BENCH_CONN_KEYS names a file of "pharmacy_id key" lines (so no key appears on a command
-- line). Keys rotate per request, each thread starting at a different one, so every
-- connection uses every key and each key is spread over all connections.
-- Item ids are (pharmacy_id - 1) * BENCH_CONN_ITEMS + 1 .. pharmacy_id * BENCH_CONN_ITEMS
-- (bench/connector.sh seeds them so).
local mode = os.getenv("BENCH_CONN_MODE") or "list"
local per_pharmacy = tonumber(os.getenv("BENCH_CONN_ITEMS") or "") or 10000
local keys_file = os.getenv("BENCH_CONN_KEYS")

local keys = {}
local n = 0
local i = 0

local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("thread_no", threads)
end

function init(args)
    math.randomseed(os.time() * 1000 + (thread_no or 0) * 7919)
    local f = assert(io.open(keys_file, "r"), "BENCH_CONN_KEYS: cannot open " .. tostring(keys_file))
    for line in f:lines() do
        local p, k = line:match("^(%d+)%s+(%S+)$")
        if p then
            n = n + 1
            keys[n] = { pharmacy = tonumber(p), key = k }
        end
    end
    f:close()
    assert(n > 0, "BENCH_CONN_KEYS: no keys")
    i = (thread_no or 0) * 3
end

function request()
    i = i + 1
    local k = keys[(i % n) + 1]
    if mode == "sale" then
        local item = (k.pharmacy - 1) * per_pharmacy + math.random(1, per_pharmacy)
        return wrk.format("POST", "/api/sales/",
            { ["X-API-KEY"] = k.key, ["Content-Type"] = "application/json" },
            '{"inventory_item":' .. item .. ',"quantity":1}')
    end
    return wrk.format("GET", "/api/inventory/?page_size=50", { ["X-API-KEY"] = k.key })
end

-- BENCH_CONN_DEBUG=1: print the first few non-2xx replies of each thread (not during
-- measured runs: a response() callback makes wrk read every body).
if os.getenv("BENCH_CONN_DEBUG") == "1" then
    local shown = 0
    function response(status, headers, body)
        if status >= 300 and shown < 3 then
            shown = shown + 1
            io.stderr:write("non-2xx " .. status .. ": " .. string.sub(body or "", 1, 300) .. "\n")
        end
    end
end
