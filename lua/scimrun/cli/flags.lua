-- The one declaration of every command-line flag: name, aliases, value, default, help text and
-- an example, per command. The parsers (runner.parse, the subcommands), `scimrun help COMMAND`
-- / `COMMAND --help` and the OPTIONS lists of man/scimrun.1 are all built from it
-- (scripts/gen-man.lua rewrites the man page's generated parts; spec/functional/help_spec.lua
-- fails when the committed page, the help or a parser disagrees with this table).
--
-- M.parse(cmd, args, cli, first) -> o, positionals   (o keyed by each flag's `key`)
-- M.help(cmd) -> text          M.overview() -> text          M.find(cmd, name) -> flag
-- M.mdoc_options(cmd) -> text  M.update_man(text) -> text    (the generated regions rewritten)
--
-- A flag: name ("--state"), short (aliases: { "-p" }), arg (value placeholder; nil for a
-- switch), kind ("switch" | "value" | "optional": the value only inline or when the next word
-- matches `next`), key (field of o; default: the name without dashes, "-" -> "_"), values
-- (allowed values), initial (o's value when the flag is absent), default (as shown), help,
-- example (as typed; "WF.lua" stands for the workflow file), apply(o, flag, value, cli) for
-- flags that do more than store their value, only (the subcommands it applies to).
local M = {}

local function kv(text)
  return (text or ""):match("^([%w_%.%-%*]+)=(.*)$")
end

-- Retry flags and --set: the command-line layer of the policy, in order (policy.apply_overrides).
local function retry_flag(policy_key)
  return function(o, flag, value)
    o.overrides[#o.overrides + 1] = { flag = flag.name, arg = value, key = "profiles.*." .. policy_key, value = value }
  end
end

local function set_flag(o, flag, value, cli)
  local k, v = kv(value)
  if not k then
    cli.fail("%s expects KEY=VALUE (for example --set rate_limit.rps=5), got %q", flag.name, tostring(value))
  end
  o.overrides[#o.overrides + 1] = { flag = flag.name, arg = value, key = k, value = v }
end

local function param_flag(o, flag, value, cli)
  local k, v = (value or ""):match("^([%w_%.%-]+)=(.*)$")
  if not k then cli.fail("%s expects key=value, got %q", flag.name, tostring(value)) end
  o.params[k] = v
end

local function verbosity(o, flag, _, cli)
  if o.verbosity and (o.verbosity < 0) ~= (flag.value < 0) then
    cli.fail("--quiet and -v/-vv contradict each other: give one of them")
  end
  o.verbosity = flag.value < 0 and flag.value or math.max(o.verbosity or 0, flag.value)
end

local HELP_FLAG = { name = "--help", short = { "-h" }, kind = "switch", default = "off",
  help = "Print this help and exit 0.", example = "--help" }

local POLICY_RETRY_NOTE = "Applied to the profile of every operation; a shorthand for --set profiles.*.%s=VALUE."

M.commands = {}

M.commands.run = {
  usage = { "scimrun WORKFLOW.lua [OPTIONS]" },
  summary = "run a workflow, or resume one",
  about = {
    "Runs WORKFLOW.lua (a Lua file ending in `return scimrun.workflow { ... }`): every step is "
      .. "recorded in the state file before the next one starts, transient failures are retried with "
      .. "the policy's backoff, and an interrupted run continues with --resume.",
  },
  sections = { "Input and state", "Running", "Policy (the top layer, over the policy file)", "Output" },
  flags = {
    { section = "Input and state", name = "--param", short = { "-p" }, arg = "KEY=VALUE", kind = "value",
      apply = param_flag, default = "the workflow's params",
      help = "Set a workflow parameter; repeat it for several. A relative path resolves against the "
        .. "current directory.",
      example = "--param csv=people.csv" },
    { section = "Input and state", name = "--state", arg = "FILE", kind = "value",
      default = "$SCIMRUN_STATE, else ./.scimrun/state.db",
      help = "The state file (SQLite, mode 0600) that records runs, steps and dead letters. One "
        .. "scimrun at a time writes it. A postgres:// URL keeps the state in PostgreSQL instead "
        .. "(the password from PGPASSWORD, ~/.pgpass or PGSERVICE, never the URL).",
      example = "--state /var/lib/scimrun/hr.db" },
    { section = "Input and state", name = "--worker", kind = "switch", default = "off",
      help = "With --state postgres://...: be one of several workers of one run. Joins the newest "
        .. "unfinished run of this workflow (or run ID with --resume ID), or starts it; the items "
        .. "are claimed from the database in batches, each under a lease.",
      example = "--state postgres://scimrun@db/scimrun --worker" },
    { section = "Input and state", name = "--lease", arg = "SECONDS", kind = "value", default = "30",
      help = "Worker mode: how long a claim on items lives without the worker's heartbeat (sent every "
        .. "third of it). The items of a worker that died are claimed again, in doubt, after that.",
      example = "--worker --lease 10" },
    { section = "Input and state", name = "--resume", arg = "[ID]", kind = "optional", next = "^r%-",
      id_key = "resume_id", default = "off: a new run",
      help = "Continue the newest run of this workflow (or run ID) when it is unfinished or has "
        .. "dead letters: completed steps return their recorded result. A completed run exits 0 "
        .. "with nothing to do. The run keeps its parameters and its policy, flags included.",
      example = "--resume r-20260101-120000-ab12" },
    { section = "Input and state", name = "--retry-failed", kind = "switch", default = "off",
      help = "On --resume, run the failed steps again instead of replaying their failure.",
      example = "--resume --retry-failed" },
    { section = "Input and state", name = "--force", kind = "switch", default = "off",
      help = "On --resume, accept a workflow or input file that changed since the run started.",
      example = "--resume --force" },
    { section = "Input and state", name = "--durability", arg = "full|normal", kind = "value",
      values = { "full", "normal" }, default = "full",
      help = "full syncs every commit; normal may lose the last commits on power loss (never on a "
        .. "crash of the process) and is faster.",
      example = "--durability normal" },
    { section = "Running", name = "--concurrency", arg = "N", kind = "value",
      default = "the workflow's options.concurrency, else 16",
      help = "Items in flight at once in wf:each. An item sleeping out a retry backoff, or waiting "
        .. "for a coalesced membership PATCH, lends its slot meanwhile (up to 4 x N items in all; "
        .. "at 1, none: strictly one item after another).",
      example = "--concurrency 8" },
    { section = "Running", name = "--continue-on-error", kind = "switch", default = "off",
      help = "An item that fails permanently goes to the dead-letter queue and the run goes on "
        .. "(exit 3 at the end). Without it the first permanent failure stops the run (exit 1).",
      example = "--continue-on-error" },
    { section = "Running", name = "--rollback-on-abort", kind = "switch", default = "off",
      help = "When the run fails, also compensate every saga that had completed, newest first.",
      example = "--rollback-on-abort" },
    { section = "Running", name = "--dry-run", kind = "switch", default = "off",
      help = "Print the writes the run would make and send none; the state file is not touched.",
      example = "--dry-run" },
    { section = "Running", name = "--check", kind = "switch", default = "off",
      help = "Preflight: read the whole input through the mapping and the policy, report every bad "
        .. "row as file:line: reason, and send nothing. Exit 0 when clean, 2 when not.",
      example = "--check" },
    { section = "Running", name = "--allow-deletes", arg = "N", kind = "value",
      default = "none: the workflow's threshold stops the run",
      help = "Approve de-provisioning up to N users when that exceeds the workflow's safety "
        .. "threshold (wf.allow_deletes, used by examples/offboard.lua).",
      example = "--allow-deletes 40" },
    { section = "Running", name = "--sandbox", arg = "[=FAULTS]", kind = "optional",
      default = "off",
      help = "Run against the embedded SCIM 2.0 sandbox on a loopback port, with the faults given "
        .. "(see scimrun help sandbox). Its data is kept beside the state file.",
      example = "--sandbox=503:0.05,latency:5ms" },
    { section = "Running", name = "--seed", arg = "N", kind = "value", default = "1 for the sandbox, random for jitter",
      help = "Makes the sandbox's faults and the retry jitter repeatable.",
      example = "--seed 42" },
    { section = "Policy (the top layer, over the policy file)", name = "--policy", arg = "NAME|FILE",
      kind = "value", default = "the workflow's options.policy, else default",
      help = "The resilience policy: a name from policies/ (default, fast-test, slack, github, "
        .. "atlassian, zoom) or a path. See scimrun-policy(5).",
      example = "--policy slack" },
    { section = "Policy (the top layer, over the policy file)", name = "--retry-attempts", arg = "N",
      kind = "value", apply = retry_flag("attempts"), default = "the policy's (balanced: 5)",
      help = "Total tries per operation, the first included (1 = never retry). "
        .. POLICY_RETRY_NOTE:format("attempts"),
      example = "--retry-attempts 2" },
    { section = "Policy (the top layer, over the policy file)", name = "--backoff-min", arg = "S",
      kind = "value", apply = retry_flag("min_delay"), default = "the policy's (balanced: 0)",
      help = "Floor of every retry delay, in seconds. " .. POLICY_RETRY_NOTE:format("min_delay"),
      example = "--backoff-min 0.5" },
    { section = "Policy (the top layer, over the policy file)", name = "--backoff-max", arg = "S",
      kind = "value", apply = retry_flag("max_delay"), default = "the policy's (balanced: 30)",
      help = "Ceiling of every computed retry delay, in seconds (a server's Retry-After is still "
        .. "honoured in full). " .. POLICY_RETRY_NOTE:format("max_delay"),
      example = "--backoff-max 10" },
    { section = "Policy (the top layer, over the policy file)", name = "--backoff-multiplier", arg = "X",
      kind = "value", apply = retry_flag("multiplier"), default = "the policy's (balanced: 2)",
      help = "Growth of the exponential backoff: retry n waits base x X^(n-1). "
        .. POLICY_RETRY_NOTE:format("multiplier"),
      example = "--backoff-multiplier 3" },
    { section = "Policy (the top layer, over the policy file)", name = "--jitter",
      arg = "none|full|equal|decorrelated", kind = "value", apply = retry_flag("jitter"),
      default = "the policy's (balanced: full)",
      help = "How retry delays are spread so that many clients do not retry in step. "
        .. POLICY_RETRY_NOTE:format("jitter"),
      example = "--jitter equal" },
    { section = "Policy (the top layer, over the policy file)", name = "--set", arg = "KEY=VALUE",
      kind = "value", apply = set_flag, default = "none",
      help = "Set one policy key; repeat it for several. KEY is SECTION.KEY (rate_limit.rps), "
        .. "profiles.NAME.KEY (NAME may be * for every profile) or operations.PATTERN (VALUE a "
        .. "profile name). Checked like a policy file: a bad value exits 2 naming the flag. The "
        .. "values are kept in the run's policy snapshot, so --resume keeps them.",
      example = "--set rate_limit.rps=5" },
    { section = "Output", name = "--report", arg = "FILE", kind = "value", default = "none",
      help = "Write every item's outcome (created, updated, skipped, adopted, failed), its error, "
        .. "the classification rule and the suggestion as JSON.",
      example = "--report run.json" },
    { section = "Output", name = "--diff", arg = "FILE", kind = "value", default = "none",
      help = "Write one JSON line per write the run makes (with --dry-run: would make): the item, the "
        .. "operation, the resource and the attributes it changes, before and after. Unchanged users "
        .. "get no write and no line. Never a secret.",
      example = "--diff changes.jsonl" },
    { section = "Output", name = "--log-format", arg = "text|json", kind = "value", values = { "text", "json" },
      default = "text",
      help = "Log lines on stderr as text or as one JSON object per line.",
      example = "--log-format json" },
    { section = "Output", name = "--log-level", arg = "debug|info|warn|error", kind = "value",
      values = { "debug", "info", "warn", "error" }, default = "info",
      help = "The lowest level logged.",
      example = "--log-level warn" },
    { section = "Output", name = "--quiet", short = { "-q" }, kind = "switch", key = "verbosity", value = -1,
      apply = verbosity, default = "off",
      help = "Only warnings, errors and the summary: no progress and no per-retry lines.",
      example = "--quiet" },
    { section = "Output", name = "-v", kind = "switch", key = "verbosity", value = 1, apply = verbosity,
      default = "off",
      help = "More detail: every retry on a terminal too (the status area counts them otherwise).",
      example = "-v" },
    { section = "Output", name = "-vv", kind = "switch", key = "verbosity", value = 2, apply = verbosity,
      default = "off",
      help = "Even more detail: every attempt.",
      example = "-vv" },
    { section = "Output", name = "--progress", arg = "auto|always|never", kind = "value",
      values = { "auto", "always", "never" }, initial = "auto", default = "auto",
      help = "The live status area: auto draws it when stderr is a terminal (otherwise a progress "
        .. "line every 10 s), always draws it anyway, never turns it off.",
      example = "--progress never" },
    { section = "Output", name = "--metrics-textfile", arg = "DIR", kind = "value", default = "none",
      help = "Write the run's Prometheus metrics to DIR/scimrun_WORKFLOW.prom (a temporary file, then "
        .. "a rename) every 5 s and at the end, for node_exporter's textfile collector. Not with "
        .. "--dry-run or --check.",
      example = "--metrics-textfile /var/lib/prometheus/node-exporter" },
    { section = "Output", name = "--metrics-port", arg = "N", kind = "value", default = "none",
      help = "Serve the run's Prometheus metrics at http://127.0.0.1:N/metrics while it runs (0 picks a "
        .. "free port; the URL is printed).",
      example = "--metrics-port 9464" },
    HELP_FLAG,
  },
  exit = {
    { "0", "every item succeeded" },
    { "1", "the run failed (it prints the command that resumes it)" },
    { "2", "usage or configuration error: one line says what and where" },
    { "3", "finished with items in the dead-letter queue" },
    { "130", "interrupted (resumable)" },
  },
}

M.commands.runs = {
  usage = { "scimrun runs [list] [--limit N] [--json] [--state FILE]",
            "scimrun runs show ID [--json] [--state FILE]" },
  summary = "list the runs of a state file, or show one",
  about = {
    "list: the newest runs with their status and step counts. show: one run's status, steps, "
      .. "parameters, its policy snapshot (files, values, and the flags of its command-line layer) "
      .. "and the command that resumes it. Only reads the state file: it works during a run.",
  },
  flags = {
    { name = "--state", arg = "FILE", kind = "value", default = "$SCIMRUN_STATE, else ./.scimrun/state.db",
      help = "The state file to read.", example = "--state /var/lib/scimrun/hr.db" },
    { name = "--json", kind = "switch", default = "off", help = "Print JSON instead of text.",
      example = "--json" },
    { name = "--limit", arg = "N", kind = "value", default = "50", only = { "list" },
      help = "How many runs list prints, newest first.", example = "--limit 10" },
    HELP_FLAG,
  },
}

M.commands.dlq = {
  usage = { "scimrun dlq [list] [--run ID] [--state-filter STATE] [--json] [--state FILE]",
            "scimrun dlq show ID [--json] [--state FILE]",
            "scimrun dlq replay ID...|--all [--run ID] [--policy NAME|FILE|original] [--sandbox] "
              .. "[--token-env NAME] [--state FILE]",
            "scimrun dlq drop ID... [--reason TEXT] [--state FILE]" },
  summary = "inspect, replay or drop dead letters",
  about = {
    "list: every entry with its step, operation, class and what to do. show: one entry's request "
      .. "(never a token), error, rule and attempt history. replay: re-send the recorded requests "
      .. "with the current token; a success becomes the step's result, so --resume continues that "
      .. "item from its next step. drop: discard entries (the items stay failed; every ID is "
      .. "checked first, so a bad one drops nothing), recorded in the audit trail with who and why.",
  },
  flags = {
    { name = "--state", arg = "FILE", kind = "value", default = "$SCIMRUN_STATE, else ./.scimrun/state.db",
      help = "The state file.", example = "--state /var/lib/scimrun/hr.db" },
    { name = "--json", kind = "switch", default = "off", only = { "list", "show" },
      help = "Print JSON instead of text.", example = "--json" },
    { name = "--run", arg = "ID", kind = "value", default = "every run", only = { "list", "replay" },
      help = "Only the entries of run ID.", example = "--run r-20260101-120000-ab12" },
    { name = "--state-filter", arg = "pending|replayed|dropped", kind = "value",
      values = { "pending", "replayed", "dropped" }, default = "every state", only = { "list" },
      help = "Only the entries in that state.", example = "--state-filter pending" },
    { name = "--all", kind = "switch", default = "off", only = { "replay" },
      help = "Replay every pending entry (of --run ID, if given).", example = "--all" },
    { name = "--policy", arg = "NAME|FILE|original", kind = "value", default = "default", only = { "replay" },
      help = "The policy the replay retries with; original uses each entry's run's policy snapshot.",
      example = "--policy original" },
    { name = "--sandbox", kind = "switch", default = "off", only = { "replay" },
      help = "Replay against the sandbox data kept beside the state file (runs made with --sandbox).",
      example = "--sandbox" },
    { name = "--token-env", arg = "NAME", kind = "value", default = "SCIM_TOKEN", only = { "replay" },
      help = "The environment variable holding the bearer token.", example = "--token-env HR_SCIM_TOKEN" },
    { name = "--reason", arg = "TEXT", kind = "value", default = "none recorded", only = { "drop" },
      help = "Why the entries are dropped, kept in the audit trail (at most 500 bytes).",
      example = "--reason 'left the company before the import'" },
    HELP_FLAG,
  },
}

M.commands.audit = {
  usage = { "scimrun audit [--run ID] [--user NAME] [--limit N] [--json] [--state FILE]" },
  summary = "list the writes made at service providers (the audit trail)",
  about = {
    "Every write scimrun made at a service provider, oldest first: when, the run and item, the "
      .. "operation, the resource and its id, the attributes changed (before -> after), and the "
      .. "result. Kept append-only in the state file for the policy's audit.retention_days (365). "
      .. "Never a token. Only reads the state file: it works during a run.",
  },
  flags = {
    { name = "--state", arg = "FILE", kind = "value", default = "$SCIMRUN_STATE, else ./.scimrun/state.db",
      help = "The state file to read.", example = "--state /var/lib/scimrun/hr.db" },
    { name = "--run", arg = "ID", kind = "value", default = "every run",
      help = "Only the writes of run ID.", example = "--run r-20260101-120000-ab12" },
    { name = "--user", arg = "NAME", kind = "value", default = "every resource",
      help = "Only the writes to user NAME (a userName, ignoring case, also a former one after a rename; "
        .. "or an id), its group memberships included.",
      example = "--user alice" },
    { name = "--limit", arg = "N", kind = "value", default = "all",
      help = "Only the newest N writes (still printed oldest first).", example = "--limit 100" },
    { name = "--json", kind = "switch", default = "off",
      help = "Print a JSON array instead of text.", example = "--json" },
    HELP_FLAG,
  },
}

M.commands.ui = {
  usage = { "scimrun ui [--state FILE] [--port N] [--bind ADDR] [--read-only] [--token-file FILE] [--sandbox] "
              .. "[--token-env NAME]" },
  summary = "a local web page of runs, items and dead letters, with Replay and Drop",
  about = {
    "Serves the operator console from the binary itself until Ctrl-C: runs (live while they run), a run's "
      .. "items and their every attempt, dead letters grouped by class and rule with Replay and Drop, and the "
      .. "audit trail; a JSON API under /api/ answers what the CLI's --json does, and /metrics the state file's "
      .. "gauges. It prints its URL, which carries a random token made at each start (or --token-file's); every "
      .. "API call must present it. Host and Origin are checked, so other sites cannot reach it. The state file "
      .. "is read while runs write it; Replay and Drop take the CLI's lock and are recorded in the audit trail "
      .. "(who: the OS user and the client's address).",
  },
  flags = {
    { name = "--state", arg = "FILE", kind = "value", default = "$SCIMRUN_STATE, else ./.scimrun/state.db",
      help = "The state file to show.", example = "--state /var/lib/scimrun/hr.db" },
    { name = "--port", arg = "N", kind = "value", default = "0 (a free port; the URL is printed)",
      help = "The TCP port to listen on.", example = "--port 8470" },
    { name = "--bind", arg = "ADDR", kind = "value", default = "127.0.0.1",
      help = "The IP address to listen on. Anything but a loopback address lets other machines reach the "
        .. "console over plain HTTP, the token being its only protection.",
      example = "--bind ::1" },
    { name = "--read-only", kind = "switch", default = "off",
      help = "Show everything, allow no action: Replay and Drop are refused (403) and hidden.",
      example = "--read-only" },
    { name = "--token-file", arg = "FILE", kind = "value", default = "a random token made at each start",
      help = "Take the console's access token from FILE (mode 0600, at least 16 characters) instead, so that "
        .. "a bookmark or a script keeps working across restarts.",
      example = "--token-file /etc/scimrun/ui.token" },
    { name = "--sandbox", kind = "switch", default = "off",
      help = "Replay against the sandbox data kept beside the state file (runs made with --sandbox), as "
        .. "scimrun dlq replay --sandbox does.",
      example = "--sandbox" },
    { name = "--token-env", arg = "NAME", kind = "value", default = "SCIM_TOKEN",
      help = "The environment variable holding the provider's bearer token that Replay sends.",
      example = "--token-env HR_SCIM_TOKEN" },
    HELP_FLAG,
  },
}

M.commands.policy = {
  usage = { "scimrun policy check [FILE] [--retry-attempts N] [--set KEY=VALUE]...",
            "scimrun policy simulate [FILE] --op OP --errors LIST [--seed N] [--target NAME]",
            "scimrun policy simulate [FILE] --server SERVER [--concurrency N] [--latency S] [--seconds S] [--seed N]" },
  summary = "check a policy file, or simulate what it does",
  about = {
    "check: load and validate a policy (FILE or a name from policies/, default: default) and print "
      .. "the effective profiles, operation map and rules; an invalid policy exits 2 listing every "
      .. "problem. simulate --op: the exact retry schedule for scripted outcomes, offline. "
      .. "simulate --server: what the learned rate limit does against such a server, window by window.",
    "LIST: comma-separated outcomes in order, the last repeating: a status (503, 201) or a transport "
      .. "error (timeout, connect, reset, dns, tls, other), options after colons: 429:ra=7 "
      .. "(Retry-After seconds), 429:reset=30 (RateLimit-Reset), 400:scim=invalidValue.",
    "SERVER: bucket:30/s (a rate limit the client is not told; bucket:600/min:burst=20), "
      .. "random429:0.03 (429s at random), none.",
    "The retry flags and --set of a run apply here too, so their effect can be seen before a run.",
  },
  flags = {
    { name = "--op", arg = "OP", kind = "value", default = "none (required with --errors)", only = { "simulate" },
      help = "The operation, RESOURCE.VERB; it picks the profile.", example = "--op users.create" },
    { name = "--errors", arg = "LIST", kind = "value", default = "none (required with --op)", only = { "simulate" },
      help = "The scripted outcomes of the attempts.", example = "--errors 503,503,429:ra=7,201" },
    { name = "--target", arg = "NAME", kind = "value", default = "simulated", only = { "simulate" },
      help = "The target name the breaker and the rate limit are kept under.", example = "--target hr" },
    { name = "--server", arg = "SERVER", kind = "value", default = "none", only = { "simulate" },
      help = "Simulate the rate limit against this server instead of a schedule.",
      example = "--server bucket:30/s" },
    { name = "--concurrency", arg = "N", kind = "value", default = "16", only = { "simulate" },
      help = "Clients sending at once (with --server).", example = "--concurrency 32" },
    { name = "--latency", arg = "S", kind = "value", default = "0.05", only = { "simulate" },
      help = "The server's answer time in seconds (with --server).", example = "--latency 0.2" },
    { name = "--seconds", arg = "S", kind = "value", default = "120", only = { "simulate" },
      help = "Simulated duration (with --server).", example = "--seconds 60" },
    { name = "--seed", arg = "N", kind = "value", default = "1", only = { "simulate" },
      help = "Seed of the jitter and of random 429s: the same seed prints the same schedule.",
      example = "--seed 5" },
    { name = "--retry-attempts", arg = "N", kind = "value", apply = retry_flag("attempts"),
      default = "the policy's", help = "As for a run: total tries per operation.", example = "--retry-attempts 2" },
    { name = "--backoff-min", arg = "S", kind = "value", apply = retry_flag("min_delay"), default = "the policy's",
      help = "As for a run: floor of every retry delay.", example = "--backoff-min 0.5" },
    { name = "--backoff-max", arg = "S", kind = "value", apply = retry_flag("max_delay"), default = "the policy's",
      help = "As for a run: ceiling of every computed retry delay.", example = "--backoff-max 10" },
    { name = "--backoff-multiplier", arg = "X", kind = "value", apply = retry_flag("multiplier"),
      default = "the policy's", help = "As for a run: growth of the exponential backoff.",
      example = "--backoff-multiplier 3" },
    { name = "--jitter", arg = "none|full|equal|decorrelated", kind = "value", apply = retry_flag("jitter"),
      default = "the policy's", help = "As for a run: how retry delays are spread.", example = "--jitter none" },
    { name = "--set", arg = "KEY=VALUE", kind = "value", apply = set_flag, default = "none",
      help = "As for a run: set one policy key; repeat it for several.", example = "--set rate_limit.rps=5" },
    HELP_FLAG,
  },
}

M.commands.sandbox = {
  usage = { "scimrun sandbox [--port N] [--host H] [--faults SPEC] [--seed N] [--persist FILE] [--quiet]" },
  summary = "serve the embedded SCIM 2.0 provider",
  about = {
    "Serves the embedded SCIM 2.0 service provider at http://HOST:PORT/scim/v2 until Ctrl-C. The "
      .. "bearer token is $SCIM_TOKEN, or a random one printed at start. GET /_admin/stats and "
      .. "/_admin/dump (same token) show the request counts and the provider's data.",
  },
  after = function() return require("scimrun.sandbox.faults").HELP end,
  flags = {
    { name = "--port", arg = "N", kind = "value", default = "0 (a free port)",
      help = "The TCP port to listen on.", example = "--port 8080" },
    { name = "--host", arg = "H", kind = "value", default = "127.0.0.1",
      help = "The address to listen on.", example = "--host 0.0.0.0" },
    { name = "--faults", arg = "SPEC", kind = "value", default = "none",
      help = "Faults to inject: comma-separated KIND:ARGS[@OPTION...] (listed below).",
      example = "--faults 503:0.05,latency:5ms" },
    { name = "--seed", arg = "N", kind = "value", default = "1",
      help = "Picks which requests the faults hit: the same spec and seed fault the same request numbers.",
      example = "--seed 7" },
    { name = "--persist", arg = "FILE", kind = "value", default = "memory only",
      help = "Keep the data in FILE (a JSON-lines journal) across restarts.", example = "--persist /tmp/sb.json" },
    { name = "--quiet", kind = "switch", default = "off",
      help = "Do not log each request on stderr.", example = "--quiet" },
    HELP_FLAG,
  },
}

M.ORDER = { "run", "runs", "dlq", "audit", "ui", "policy", "sandbox" }

-- Flags that stand first, instead of a command (scimrun._cli handles them).
M.TOP = {
  { name = "-l", usage = "scimrun -l SCRIPT.lua [ARGS]", help = "run a Lua script with the runtime loaded" },
  { name = "--version", usage = "scimrun --version", help = "versions of scimrun, LuaJIT, libuv, libcurl, SQLite" },
}

local function key_of(flag)
  return flag.key or flag.name:gsub("^%-+", ""):gsub("%-", "_")
end
M.key_of = key_of

-- The flag of command `cmd` named `name` (or one of its aliases).
function M.find(cmd, name)
  for _, f in ipairs(M.commands[cmd].flags) do
    if f.name == name then return f end
    for _, s in ipairs(f.short or {}) do
      if s == name then return f end
    end
  end
end

local function join_or(list)
  if #list == 1 then return list[1] end
  return table.concat(list, ", ", 1, #list - 1) .. " or " .. list[#list]
end

-- Parses args[first..] of command `cmd`. Words that do not start with "-" are positionals.
function M.parse(cmd, args, cli, first)
  local o, pos = { params = {}, overrides = {} }, {}
  local i = first or 1
  while i <= #args do
    local a = args[i]
    local name, inline = a:match("^(%-%-[%w%-]+)=(.*)$")
    name = name or a
    local f = a:sub(1, 1) == "-" and a ~= "-" and M.find(cmd, name)
    if not f then
      if a:sub(1, 1) == "-" and a ~= "-" then
        cli.fail("unknown option %s (see: scimrun help %s)", a, cmd)
      end
      pos[#pos + 1] = a
    else
      local key = key_of(f)
      local value
      if f.kind == "switch" then
        if inline then cli.fail("%s takes no value", f.name) end
        value = f.value == nil and true or f.value
      elseif f.kind == "optional" then
        value = inline
        if not value and f.next and args[i + 1] and args[i + 1]:match(f.next) then
          value = args[i + 1]
          i = i + 1
        end
      else
        value = inline or args[i + 1]
        if value == nil then cli.fail("%s needs a value (for example %s)", f.name, f.example) end
        if not inline then i = i + 1 end
        if f.values then
          local ok = false
          for _, v in ipairs(f.values) do ok = ok or v == value end
          if not ok then cli.fail("%s must be %s, got %s", f.name, join_or(f.values), value) end
        end
      end
      if f.apply then
        f.apply(o, f, value, cli)
      elseif f.kind == "optional" and f.id_key then
        o[key] = true
        o[f.id_key] = value
      elseif f.kind == "optional" then
        o[key] = value or ""
      else
        o[key] = value
      end
    end
    i = i + 1
  end
  for _, f in ipairs(M.commands[cmd].flags) do
    if f.initial ~= nil and o[key_of(f)] == nil then o[key_of(f)] = f.initial end
  end
  return o, pos
end

-- A flag given to a subcommand it does nothing for (`dlq list --reason x`) is an error (exit 2)
-- naming the subcommands it is for, rather than ignored: the person meant something by it.
function M.check_only(cmd, o, sub, cli)
  for _, f in ipairs(M.commands[cmd].flags) do
    if f.only and o[key_of(f)] ~= nil then
      local fits = false
      for _, s in ipairs(f.only) do fits = fits or s == sub end
      if not fits then
        cli.fail("%s is for scimrun %s %s, not %s (see: scimrun help %s)", f.name, cmd, join_or(f.only), sub, cmd)
      end
    end
  end
end

-- Help text ----------------------------------------------------------------------------------

local function wrap(text, width, indent)
  local lines, line = {}, nil
  for word in text:gmatch("%S+") do
    if line and #line + 1 + #word > width then
      lines[#lines + 1] = indent .. line
      line = word
    else
      line = line and (line .. " " .. word) or word
    end
  end
  if line then lines[#lines + 1] = indent .. line end
  return table.concat(lines, "\n")
end

-- "-p, --param KEY=VALUE" / "--sandbox[=FAULTS]" / "--resume [ID]"
function M.signature(f)
  local names = {}
  for _, s in ipairs(f.short or {}) do names[#names + 1] = s end
  names[#names + 1] = f.name
  local sig = table.concat(names, ", ")
  if f.arg then sig = sig .. (f.arg:sub(1, 2) == "[=" and "" or " ") .. f.arg end
  return sig
end

local function flag_help(f)
  local out = { "  " .. M.signature(f) }
  local text = f.help
  if f.only then text = text .. " (" .. table.concat(f.only, ", ") .. ")" end
  out[#out + 1] = wrap(text, 88, "        ")
  out[#out + 1] = wrap("default: " .. f.default, 88, "        ")
  out[#out + 1] = "        example: " .. f.example
  return table.concat(out, "\n")
end

function M.help(cmd)
  local c = M.commands[cmd]
  local out = {}
  for i, u in ipairs(c.usage) do out[#out + 1] = (i == 1 and "usage: " or "       ") .. u end
  out[#out + 1] = ""
  for _, p in ipairs(c.about) do
    out[#out + 1] = wrap(p, 96, "")
    out[#out + 1] = ""
  end
  local sections = c.sections or { "Options" }
  for _, s in ipairs(sections) do
    out[#out + 1] = s .. ":"
    for _, f in ipairs(c.flags) do
      if (f.section or "Options") == s or (f == HELP_FLAG and s == sections[#sections]) then
        out[#out + 1] = flag_help(f)
      end
    end
    out[#out + 1] = ""
  end
  if c.exit then
    out[#out + 1] = "Exit status:"
    for _, e in ipairs(c.exit) do out[#out + 1] = ("  %-5s %s"):format(e[1], e[2]) end
    out[#out + 1] = ""
  end
  if c.after then
    out[#out + 1] = c.after()
    out[#out + 1] = ""
  end
  out[#out + 1] = "More: man scimrun" .. (cmd == "policy" and ", man 5 scimrun-policy" or "")
    .. ", scimrun help (every command)"
  return table.concat(out, "\n") .. "\n"
end

function M.overview()
  local out = { "usage:" }
  for _, cmd in ipairs(M.ORDER) do
    for _, u in ipairs(M.commands[cmd].usage) do out[#out + 1] = "  " .. u end
  end
  for _, t in ipairs(M.TOP) do out[#out + 1] = ("  %-30s %s"):format(t.usage, t.help) end
  out[#out + 1] = ""
  out[#out + 1] = "Commands:"
  for _, cmd in ipairs(M.ORDER) do
    out[#out + 1] = ("  %-9s %s"):format(cmd, M.commands[cmd].summary)
  end
  out[#out + 1] = ""
  out[#out + 1] = "Every flag, its default and an example: scimrun help COMMAND (or scimrun COMMAND --help;"
  out[#out + 1] = "for a run: scimrun help run, or scimrun WORKFLOW.lua --help). Manual: man scimrun,"
  out[#out + 1] = "man 5 scimrun-policy."
  return table.concat(out, "\n") .. "\n"
end

-- Man page (mdoc) ----------------------------------------------------------------------------

-- Text for an mdoc text line: backslashes escaped, no line starting with a control character,
-- one sentence per line.
local function mdoc_text(s)
  s = s:gsub("\\", "\\e"):gsub("([%.%?!]%)?) +", "%1\n")
  local out = {}
  for sentence in s:gmatch("[^\n]+") do
    for l in (wrap(sentence, 78, "") .. "\n"):gmatch("([^\n]*)\n") do
      out[#out + 1] = l:match("^[%.']") and ("\\&" .. l) or l
    end
  end
  return table.concat(out, "\n")
end
M.mdoc_text = mdoc_text

local function mdoc_arg(s)
  return '"' .. s:gsub("\\", "\\e"):gsub('"', '\\(dq') .. '"'
end

-- ".It Fl p Ar KEY=VALUE , Fl -param Ar KEY=VALUE"
local function mdoc_item(f)
  local function one(name)
    local parts = { "Fl " .. name:sub(2) }
    if f.arg then
      if f.arg:sub(1, 2) == "[=" then
        parts[1] = parts[1] .. " Ns Op = Ns Ar " .. f.arg:sub(3, -2)
      elseif f.arg:sub(1, 1) == "[" then
        parts[#parts + 1] = "Op Ar " .. f.arg:sub(2, -2)
      else
        parts[#parts + 1] = "Ar " .. mdoc_arg(f.arg)
      end
    end
    return table.concat(parts, " ")
  end
  local items = {}
  for _, s in ipairs(f.short or {}) do items[#items + 1] = one(s) end
  items[#items + 1] = one(f.name)
  return ".It " .. table.concat(items, " , ")
end

function M.mdoc_options(cmd)
  local c = M.commands[cmd]
  local out = { ".Bl -tag -width Ds" }
  for _, f in ipairs(c.flags) do
    out[#out + 1] = mdoc_item(f)
    local text = f.help
    if f.only then text = text .. " Used by " .. join_or(f.only) .. "." end
    out[#out + 1] = mdoc_text(text)
    out[#out + 1] = mdoc_text("Default: " .. f.default .. ".")
    out[#out + 1] = "Example:"
    out[#out + 1] = ".Ql " .. mdoc_arg(f.example)
  end
  out[#out + 1] = ".El"
  return table.concat(out, "\n")
end

local BEGIN = '.\\" BEGIN GENERATED OPTIONS: '
local END = '.\\" END GENERATED OPTIONS: '

-- Rewrites each region between `.\" BEGIN GENERATED OPTIONS: CMD` and `.\" END GENERATED
-- OPTIONS: CMD` with mdoc_options(CMD). Returns the text and the commands it found.
function M.update_man(text)
  local found = {}
  local out = text:gsub("(" .. BEGIN:gsub("%p", "%%%0") .. "(%w+)[^\n]*\n)(.-)(" .. END:gsub("%p", "%%%0")
    .. "%w+)", function(open, cmd, _, close)
    if not M.commands[cmd] then return nil end
    found[#found + 1] = cmd
    return open .. M.mdoc_options(cmd) .. "\n" .. close
  end)
  return out, found
end

return M
