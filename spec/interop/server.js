// Independent SCIM 2.0 service provider for scimrun's interop specs: express + scimmy-routers
// (RFC 7644 protocol handling written by others) over in-memory Users and Groups.
//   node spec/interop/server.js --port 0 --port-file FILE     (SCIM_TOKEN = the bearer token)
// Behaviour a real provider has and the client must cope with:
//   * userName is unique case-insensitively (RFC 7643 §4.1.1 caseExact=false): 409 uniqueness,
//     and `userName eq` / `displayName eq` filters compare case-insensitively;
//   * ETags: meta.version on every resource, an ETag header, If-Match enforced (412);
//   * bearer-token authentication (401).
// GET /_admin/dump (no auth, loopback only) returns the server's own records and write counts,
// so specs check outcomes by the provider's state rather than by the client's word; its `stats`
// (also GET /_admin/stats) count the authenticated SCIM requests by "METHOD /Users|/Groups"
// (all answers, faulted ones included) and by status, the injected faults, and the requests
// refused for their token (`rejected`, by route).
// POST /_admin/revoke revokes the current token (later requests answer 401); POST /_admin/token
// issues a new one and answers {"token": "..."}, as betterauth_server.js does (a reset keeps
// whichever token is current).
// Optional fault injection, for bench/onboard_bench.sh (TARGET=scimmy): --faults SPEC and
// --seed N, as faults.js describes.
import express from "express";
import { randomBytes, randomUUID } from "node:crypto";
import SCIMMY from "scimmy";
import SCIMMYRouters from "scimmy-routers";
import { argValue as argOf, parseFaults, seededRandom, newStats, scimError, countAndFault, announcePort }
    from "./faults.js";

const args = process.argv.slice(2);
const argValue = (name, dflt) => argOf(args, name, dflt);
const port = Number(argValue("--port", args[0] && !args[0].startsWith("--") ? args[0] : "0"));
const portFile = argValue("--port-file");
const maxResults = Number(argValue("--max-results", "50"));
const faultSpec = argValue("--faults", "");
const seed = Number(argValue("--seed", "1"));
// The bearer token clients must send; null once revoked (then nothing is accepted).
let TOKEN = process.env.SCIM_TOKEN;
if (!TOKEN) {
    console.error("server.js: set SCIM_TOKEN to the bearer token clients must send");
    process.exit(2);
}

const authorized = (req) => TOKEN !== null && req.header("Authorization") === `Bearer ${TOKEN}`;

const faultRules = parseFaults(faultSpec, "server.js");
const random = seededRandom(seed, "server.js");
let stats = newStats();

const users = new Map();
const groups = new Map();
const writes = { POST: 0, PUT: 0, PATCH: 0, DELETE: 0 };
let preconditionFailed = 0;
let versionCounter = 0;

const now = () => new Date().toISOString();
const clone = (v) => JSON.parse(JSON.stringify(v));
const nextVersion = () => `W/"${++versionCounter}"`;
const CI_ATTRS = new Set(["username", "displayname"]);

// Filters compare userName/displayName case-insensitively: lower-case both the expression
// values for those attributes and the candidates, then let scimmy's matcher do the rest.
const lowerExpr = (node, key) => {
    if (Array.isArray(node)) return node.map((v) => lowerExpr(v, key));
    if (node && typeof node === "object") {
        return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, lowerExpr(v, k)]));
    }
    return typeof node === "string" && key && CI_ATTRS.has(key.toLowerCase()) ? node.toLowerCase() : node;
};
const applyFilter = (filter, items) => {
    if (!filter) return items;
    const expr = lowerExpr(clone(filter));
    const projected = items.map((it) => ({
        ...it,
        ...(typeof it.userName === "string" ? { userName: it.userName.toLowerCase() } : {}),
        ...(typeof it.displayName === "string" ? { displayName: it.displayName.toLowerCase() } : {}),
    }));
    const keep = new Set(new SCIMMY.Types.Filter(expr).match(projected).map((p) => p.id));
    return items.filter((it) => keep.has(it.id));
};

const notFound = (id) => new SCIMMY.Types.Error(404, null, `Resource ${id} not found`);

const store = (map, resource, instance, extra) => {
    const data = clone(instance);
    delete data.meta;
    if (resource.id) {
        const old = map.get(resource.id);
        if (!old) throw notFound(resource.id);
        const updated = { ...data, ...extra, id: resource.id,
            meta: { created: old.meta.created, lastModified: now(), version: nextVersion() } };
        map.set(resource.id, updated);
        return clone(updated);
    }
    const id = randomUUID();
    const created = { ...data, ...extra, id, meta: { created: now(), lastModified: now(), version: nextVersion() } };
    map.set(id, created);
    return clone(created);
};

const read = (map, resource) => {
    if (resource.id) {
        const item = map.get(resource.id);
        if (!item) throw notFound(resource.id);
        return clone(item);
    }
    return clone(applyFilter(resource.filter, [...map.values()]));
};

// The enterprise extension (department, employeeNumber, ...), optional, as most providers have
// it: undeclared, scimmy accepted its URN in `schemas` but dropped its attributes.
SCIMMY.Resources.declare(SCIMMY.Resources.User)
    .extend(SCIMMY.Schemas.EnterpriseUser, false)
    .ingress((resource, instance) => {
        const name = String(instance.userName ?? "").toLowerCase();
        for (const u of users.values()) {
            if (u.id !== resource.id && String(u.userName).toLowerCase() === name) {
                throw new SCIMMY.Types.Error(409, "uniqueness", `userName ${instance.userName} is already taken`);
            }
        }
        return store(users, resource, instance, {});
    })
    .egress((resource) => read(users, resource))
    .degress((resource) => {
        if (!users.delete(resource.id)) throw notFound(resource.id);
        for (const g of groups.values()) {
            g.members = (g.members ?? []).filter((m) => m.value !== resource.id);
        }
    });

SCIMMY.Resources.declare(SCIMMY.Resources.Group)
    .ingress((resource, instance) => {
        const members = (clone(instance).members ?? []).map((m) => {
            if (!users.has(m.value)) {
                throw new SCIMMY.Types.Error(400, "invalidValue", `member ${m.value} is not a known user`);
            }
            return { value: m.value, display: users.get(m.value).userName, type: "User" };
        });
        return store(groups, resource, instance, { members });
    })
    .egress((resource) => read(groups, resource))
    .degress((resource) => {
        if (!groups.delete(resource.id)) throw notFound(resource.id);
    });

const app = express();
app.disable("x-powered-by");

app.get("/_admin/dump", (req, res) => {
    res.json({ users: [...users.values()], groups: [...groups.values()], writes, preconditionFailed, stats });
});
app.get("/_admin/stats", (req, res) => {
    res.json({ ...stats, users: users.size, groups: groups.size, faults: faultSpec, seed });
});
app.post("/_admin/reset", (req, res) => {
    users.clear();
    groups.clear();
    for (const k of Object.keys(writes)) writes[k] = 0;
    preconditionFailed = 0;
    stats = newStats();
    res.status(204).end();
});
app.post("/_admin/revoke", (req, res) => {
    TOKEN = null;
    res.status(204).end();
});
app.post("/_admin/token", (req, res) => {
    TOKEN = `scimmy-${randomBytes(24).toString("hex")}`;
    res.json({ token: TOKEN });
});

// Counts and faults: before anything else sees an authenticated SCIM request.
app.use("/scim/v2", countAndFault({
    authenticated: authorized,
    stats: () => stats, rules: faultRules, random,
}));

// ETag header on every single-resource answer, If-Match checked before any write.
app.use("/scim/v2", (req, res, next) => {
    const json = res.json.bind(res);
    res.json = (body) => {
        if (body && typeof body === "object" && body.meta && body.meta.version && !body.Resources) {
            res.setHeader("ETag", body.meta.version);
        }
        return json(body);
    };
    const m = req.path.match(/^\/(Users|Groups)\/([^/]+)$/);
    if (m && ["PUT", "PATCH", "DELETE"].includes(req.method)) {
        const item = (m[1] === "Users" ? users : groups).get(decodeURIComponent(m[2]));
        const ifMatch = req.header("If-Match");
        if (item && ifMatch && ifMatch !== "*" && !ifMatch.split(/\s*,\s*/).includes(item.meta.version)) {
            preconditionFailed += 1;
            return scimError(res, 412, `If-Match ${ifMatch} does not match the current version ${item.meta.version}`);
        }
    }
    if (authorized(req) && writes[req.method] !== undefined) {
        res.on("finish", () => { if (res.statusCode < 300) writes[req.method] += 1; });
    }
    next();
});

app.use("/scim/v2", new SCIMMYRouters({
    type: "bearer",
    docUri: "https://example.invalid/scimrun-interop",
    handler: (request) => {
        if (!authorized(request)) throw new Error("Bearer token missing or wrong");
        return "admin";
    },
}));
// After the routers: their constructor resets the service provider configuration.
SCIMMY.Config.set({ patch: true, filter: maxResults, sort: true, bulk: false, etag: true });

const server = app.listen(port, "127.0.0.1", () => announcePort(server.address().port, portFile));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
