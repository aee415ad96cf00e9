-- bench/login.lua — wrk script for bench/auth.sh: every request is a successful login,
-- POST /api/auth/login/ {"email": BENCH_EMAIL, "password": BENCH_PASSWORD} (JSON).
-- The password comes from the environment so it never sits in the repository next to a
-- real account; auth.sh creates the user it logs in as.
local email = os.getenv("BENCH_EMAIL") or "bench@example.com"
local password = os.getenv("BENCH_PASSWORD") or error("BENCH_PASSWORD is not set")

local function json_string(s)
    return '"' .. s:gsub('[%c"\\]', function(c)
        return string.format("\\u%04x", c:byte())
    end) .. '"'
end

wrk.method = "POST"
wrk.path = "/api/auth/login/"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email":' .. json_string(email) .. ',"password":' .. json_string(password) .. '}'
