-- The console's page (scimrun ui): a shell that app.js fills in from the JSON API. It holds no
-- data, so it is served without the token; no inline script or style (the Content-Security-Policy
-- allows this origin's files only).
return [==[<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>scimrun console</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header class="top">
  <a class="brand" href="#/runs">scimrun <span class="muted">console</span></a>
  <nav>
    <a href="#/runs" data-nav="runs">Runs</a>
    <a href="#/dlq" data-nav="dlq">Dead letters <span id="dlq-count" class="count" hidden></span></a>
    <a href="#/audit" data-nav="audit">Audit</a>
  </nav>
  <span class="spacer"></span>
  <span id="live" class="live" hidden></span>
  <span id="mode" class="pill warn" hidden>read-only</span>
  <span id="state-file" class="muted mono"></span>
</header>
<main id="view"><p class="muted">Loading&hellip;</p></main>
<dialog id="confirm" aria-labelledby="confirm-title">
  <h2 id="confirm-title"></h2>
  <div id="confirm-body"></div>
  <label id="confirm-reason-label" hidden>Reason (required, kept in the audit trail)
    <textarea id="confirm-reason" maxlength="500" rows="3"></textarea></label>
  <p class="cli">Equivalent command:</p>
  <pre id="confirm-cli" class="cmd"></pre>
  <div class="buttons">
    <button type="button" id="confirm-cancel">Cancel</button>
    <button type="button" id="confirm-ok" class="primary">Confirm</button>
  </div>
</dialog>
<div id="toast" role="status" aria-live="polite" hidden></div>
</body>
</html>
]==]
