-- bench/item.lua — wrk script for bench/db.sh: every request reads one random row,
-- GET /test/db/item/<id>/ with id uniform in 1..BENCH_ITEM_MAX (default 1,000,000 =
-- pgbench_accounts at scale 10), the same access pattern as `pgbench -S`.
local max_id = tonumber(os.getenv("BENCH_ITEM_MAX") or "") or 1000000

local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("thread_no", threads)
end

function init(args)
    -- a different sequence per thread (and per run)
    math.randomseed(os.time() * 1000 + (thread_no or 0) * 7919)
end

function request()
    return wrk.format("GET", "/test/db/item/" .. math.random(1, max_id) .. "/")
end
