-- The policy of examples/group_sync.lua: scimrun examples/group_sync.lua --policy group_sync
--
-- Only users.create retries. Everything else is attempted once, on purpose:
--   * group_sync is itself the retry: every run reads each group's current members and sends
--     only the difference, so rerunning (or --resume) after a failure converges without sending
--     anything twice. A membership PATCH retried blindly inside a run would re-apply a delta
--     computed from a read that may be stale by then (someone else changed the group), where a
--     rerun recomputes it from a fresh read;
--   * a failed read stops the run before it writes anything based on it;
--   * creating a missing member user is the one write that is not recomputed by the next run
--     without cost (the member cannot be added until the user exists), and a lost create
--     response is safe to retry: before re-sending, the client looks the user up by userName and
--     adopts it, so no duplicate is made.
-- Extend this file (extends = "group_sync") to add a provider's limits, or copy the operations
-- map into a provider preset: operations = { ["*"] = "none", ["users.create"] = "balanced" }.
return {
  extends = "default",
  description = "group_sync: only users.create retries; membership changes converge by rerunning",
  operations = {
    ["*"] = "none",
    ["users.*"] = "none",
    ["groups.*"] = "none",
    ["groups.create"] = "none",
    ["users.create"] = "balanced",
  },
}
