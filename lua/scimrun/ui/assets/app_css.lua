-- The console's style sheet (scimrun ui).
return [==[
:root {
  --fg: #1d232b; --muted: #667085; --line: #e3e7ee; --bg: #f6f7f9; --card: #fff;
  --accent: #2458c6; --ok: #1a7f4b; --bad: #b42318; --warn: #a15c07; --info: #4b5ea8;
  font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; font-size: 14px;
}
* { box-sizing: border-box; }
[hidden] { display: none !important; }
td.nowrap { white-space: nowrap; }
td.wrap { overflow-wrap: anywhere; min-width: 220px; }
body { margin: 0; color: var(--fg); background: var(--bg); }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.mono, code, pre { font-family: "DejaVu Sans Mono", ui-monospace, monospace; font-size: 12.5px; }
.muted { color: var(--muted); }
header.top { display: flex; align-items: center; gap: 18px; padding: 10px 20px; background: #111827; color: #e5e7eb; }
header.top a { color: #e5e7eb; }
header.top .brand { font-weight: 700; font-size: 16px; }
header.top .brand .muted { color: #9ca3af; font-weight: 400; }
header.top nav { display: flex; gap: 14px; }
header.top nav a { padding: 4px 8px; border-radius: 6px; }
header.top nav a.active { background: #374151; }
header.top .muted { color: #9ca3af; }
.spacer { flex: 1; }
.count { background: var(--bad); color: #fff; border-radius: 9px; padding: 0 7px; font-size: 12px; }
.live::before { content: "\25CF "; color: #34d399; }
main { padding: 18px 22px 60px; max-width: 1500px; }
h1 { font-size: 20px; margin: 4px 0 14px; display: flex; align-items: center; gap: 10px; flex-wrap: wrap; }
h2 { font-size: 16px; margin: 22px 0 10px; }
.toolbar { display: flex; gap: 10px; align-items: center; flex-wrap: wrap; margin: 8px 0 12px; }
.toolbar label { display: flex; gap: 6px; align-items: center; color: var(--muted); }
input, select, textarea, button { font: inherit; }
input[type=search], input[type=text], select, textarea {
  padding: 5px 8px; border: 1px solid #cfd5df; border-radius: 6px; background: #fff;
}
textarea { width: 100%; display: block; margin-top: 6px; }
button { padding: 5px 12px; border: 1px solid #cfd5df; border-radius: 6px; background: #fff; cursor: pointer; }
button:hover { background: #eef2f8; }
button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
button.primary:hover { background: #1d4aa8; }
button.danger { color: var(--bad); border-color: #f1b5ae; }
button.small { padding: 2px 8px; font-size: 12.5px; }
button:disabled { opacity: .5; cursor: default; }
table { border-collapse: collapse; width: 100%; background: var(--card); border: 1px solid var(--line); }
th, td { text-align: left; padding: 6px 9px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #f0f2f6; font-weight: 600; color: #344054; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:hover td { background: #fafbfd; }
td.err { color: var(--bad); max-width: 420px; }
.pill { display: inline-block; border-radius: 10px; padding: 1px 9px; font-size: 12px; font-weight: 600;
  background: #eef0f4; color: #344054; white-space: nowrap; }
.pill.ok { background: #dcf5e7; color: var(--ok); }
.pill.bad { background: #fde4e1; color: var(--bad); }
.pill.warn { background: #fdf0d5; color: var(--warn); }
.pill.info { background: #e3e8fb; color: var(--info); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); gap: 10px; margin-bottom: 12px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.card .k { color: var(--muted); font-size: 12px; }
.card .v { font-size: 20px; font-weight: 650; margin-top: 2px; }
.bar { width: 120px; height: 8px; background: #e5e7eb; border-radius: 4px; overflow: hidden; display: inline-block;
  vertical-align: middle; margin-right: 6px; }
.bar > span { display: block; height: 100%; background: var(--accent); }
pre { background: #0f172a; color: #e2e8f0; padding: 10px 12px; border-radius: 8px; overflow: auto; max-height: 420px;
  margin: 6px 0; }
pre.cmd { white-space: pre-wrap; word-break: break-all; }
.cmdline { display: flex; gap: 8px; align-items: flex-start; }
.cmdline pre { flex: 1; margin: 0; }
.group { background: var(--card); border: 1px solid var(--line); border-radius: 10px; margin-bottom: 14px; }
.group > .head { display: flex; align-items: center; gap: 12px; padding: 10px 14px; flex-wrap: wrap; }
.group > .head .title { font-size: 16px; font-weight: 650; }
.group > .head .title .times { color: var(--muted); font-weight: 400; }
.group > .todo { padding: 0 14px 8px; color: #344054; }
.group > .cmd { margin: 0 14px 10px; }
.group table { border: 0; border-top: 1px solid var(--line); }
.note { background: #fff8e6; border: 1px solid #f3d08a; border-radius: 8px; padding: 8px 12px; margin: 8px 0; }
.error { background: #fde4e1; border: 1px solid #f1b5ae; border-radius: 8px; padding: 8px 12px; margin: 8px 0; }
.result { background: #e7f6ee; border: 1px solid #a6dbbd; border-radius: 8px; padding: 8px 12px; margin: 8px 0; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0 0 12px; }
dl.kv dt { color: var(--muted); }
dl.kv dd { margin: 0; }
details summary { cursor: pointer; margin: 8px 0; font-weight: 600; }
.pager { display: flex; gap: 10px; align-items: center; margin-top: 8px; }
dialog { border: 1px solid var(--line); border-radius: 12px; padding: 18px 22px; width: min(680px, 92vw);
  box-shadow: 0 20px 50px rgba(0,0,0,.25); }
dialog::backdrop { background: rgba(15, 23, 42, .45); }
dialog h2 { margin-top: 0; }
dialog .buttons { display: flex; justify-content: flex-end; gap: 10px; margin-top: 14px; }
dialog .cli { margin-bottom: 0; color: var(--muted); }
#toast { position: fixed; right: 20px; bottom: 20px; background: #111827; color: #fff; padding: 10px 14px;
  border-radius: 8px; max-width: 520px; box-shadow: 0 8px 24px rgba(0,0,0,.3); }
.login { max-width: 560px; background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 18px; }
.login input { width: 100%; margin: 8px 0; }
]==]
