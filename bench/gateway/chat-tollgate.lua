-- wrk script for the Tollgate target: chat.lua with the Tollgate model id ("provider/model") and the caller's
-- Tollgate key from the environment (TOLLGATE_KEY), same body otherwise, same RESULT line.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("TOLLGATE_KEY") or "missing-TOLLGATE_KEY")
wrk.body = '{"model":"fake/bench-model","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":16}'
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f reqs=%d errors_socket=%d http_status_errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50)/1000, latency:percentile(90)/1000,
    latency:percentile(99)/1000, latency.max/1000, summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.errors.status))
end
