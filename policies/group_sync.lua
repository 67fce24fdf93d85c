-- The policy of examples/group_sync.lua: scimrun examples/group_sync.lua --policy group_sync
--
-- Reads retry (balanced); of the writes, only users.create does. The other writes are attempted
-- once, on purpose:
--   * group_sync is itself the retry for its writes: every run reads each group's current
--     members and sends only the difference, so rerunning (or --resume) after a failure
--     converges without sending anything twice. A membership PATCH retried blindly inside a run
--     would re-apply a delta computed from a read that may be stale by then (someone else
--     changed the group), where a rerun recomputes it from a fresh read;
--   * creating a missing member user is the one write that is not recomputed by the next run
--     without cost (the member cannot be added until the user exists), and a lost create
--     response is safe to retry: before re-sending, the client looks the user up by userName and
--     adopts it, so no duplicate is made.
-- Reads are idempotent and a run makes hundreds of them (one lookup per member, one per group):
-- tried once each, some read failed on every run against a server with a few percent of
-- transient errors, so rerunning never converged. They retry; a read that still fails stops the
-- run before it writes anything based on it. The reads a write makes for itself (read-modify-PUT
-- on a provider without PATCH) go under the write's operation name and keep its scope.
-- Extend this file (extends = "group_sync") to add a provider's limits, or copy the operations
-- map into a provider preset.
return {
  extends = "default",
  description = "group_sync: reads and users.create retry; membership changes converge by rerunning",
  operations = {
    ["*"] = "none",
    ["users.*"] = "none",
    ["groups.*"] = "none",
    ["groups.create"] = "none",
    ["users.create"] = "balanced",
    -- reads
    ["users.search"] = "balanced",
    ["users.get"] = "balanced",
    ["groups.search"] = "balanced",
    ["groups.get"] = "balanced",
  },
}
