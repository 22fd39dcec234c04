-- wrk script: POST one body, each request with the next distinct pre-minted token of a token file.
-- wrk -s wrk_tokens.lua URL -- BODY_FILE TOKEN_FILE [LIMIT_PER_THREAD] [THREADS]
-- Thread i uses tokens i, i+T, i+2T... so no token is sent twice unless the file runs out
-- (counted in token_wraps: a reused token is a replay and must be refused when auth is on).
-- LIMIT_PER_THREAD > 0 stops a thread after that many responses (bounded in count and in time -d).
local threads = {}
local counter = 1

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local body_file, token_file = args[1], args[2]
  limit = tonumber(args[3] or "0")
  local nthreads = tonumber(args[4] or "1")
  local f = assert(io.open(body_file, "rb"))
  body = f:read("*a")
  f:close()
  tokens = {}
  local i = 0
  for line in io.lines(token_file) do
    if line ~= "" then
      if (i % nthreads) == (id - 1) then table.insert(tokens, line) end
      i = i + 1
    end
  end
  if #tokens == 0 then tokens = {"none"} end
  next_token, responses, non2xx, wraps = 1, 0, 0, 0
end

function request()
  local token = tokens[next_token]
  next_token = next_token + 1
  if next_token > #tokens then
    next_token = 1
    wraps = wraps + 1
  end
  local headers = {}
  headers["Host"] = wrk.headers["Host"]
  headers["Content-Type"] = "application/json"
  headers["Authorization"] = "Bearer " .. token
  return wrk.format("POST", wrk.path, headers, body)
end

function response(status, headers, body)
  responses = responses + 1
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
  if limit > 0 and responses >= limit then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local n2, wr, resp = 0, 0, 0
  for _, t in ipairs(threads) do
    n2 = n2 + (t:get("non2xx") or 0)
    wr = wr + (t:get("wraps") or 0)
    resp = resp + (t:get("responses") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"responses":%d,"duration_us":%d,"non2xx":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"token_wraps":%d}\n',
    summary.requests, resp, summary.duration, n2, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean, wr))
end
