-- N no-op steps under wf:each at the given concurrency: measures the store's group commit.
-- Items from FAIL_FROM on fail permanently (to leave a run 99% complete for the resume bench).
return scimrun.workflow {
  name = "bench-noop-steps",
  params = { n = 100000, concurrency = 64, steps = true },
  run = function(wf, p)
    local fail_from = tonumber(wf.env "FAIL_FROM" or "")
    local i = 0
    local function items()
      i = i + 1
      if i <= p.n then return i end
    end
    wf:each(items, { concurrency = p.concurrency }, function(k)
      if not p.steps then return end
      wf:step("s" .. k, function()
        if fail_from and k >= fail_from then error({ class = "permanent", detail = "bench stop" }, 0) end
        return k
      end)
    end)
    local f = io.open("/proc/self/status")
    local hwm = f and f:read("*a"):match("VmHWM:%s*(%d+)")
    if f then f:close() end
    io.stderr:write(("peak_rss_kib %s\n"):format(hwm or "?"))
  end,
}
