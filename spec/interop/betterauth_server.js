// Second independent SCIM 2.0 service provider for scimrun's interop specs: Better Auth with its
// SCIM plugin (@better-auth/scim, written by others), on Better Auth's memory adapter, behind
// express.
//   node spec/interop/betterauth_server.js --port 0 [--port-file FILE --token-file FILE]
// At start it creates every table of the Better Auth schema (the plugin's included) in memory,
// then issues a SCIM bearer token the way the plugin's managed connections do it (server-side
// createSCIMManagedConnection: a connection for one provisioning domain, with a generated,
// HMAC-digested credential). With --port-file the token goes to --token-file (mode 0600) before
// the port is written; without, both are printed: the SCIM base URL on the first line, the
// token on the second.
// What this provider is like (its /ServiceProviderConfig says so, except the first point):
//   * userName is unique case-insensitively per connection; so is a Group's displayName, and
//     each user's primary email is unique across Better Auth's own user table (409 uniqueness);
//   * filters: `eq` only (joined by `and`), on id, userName, externalId, emails.value
//     (Users) and id, displayName, externalId (Groups); anything else is a 400 invalidFilter;
//   * no ETags, no sort, no bulk; pages of at most 100 (filter.maxResults = 100);
//   * a Group holds at most 1000 direct members.
// Admin routes (no auth, loopback only), the way server.js has them for scimmy:
//   GET  /_admin/dump    the server's own records read from its tables: users (SCIM users with
//                        their stored attributes), groups (with member ids), authUsers (Better
//                        Auth's user rows), writes by method, preconditionFailed (always 0:
//                        no ETags), ifMatch (requests that sent If-Match anyway), stats
//                        (requests by "METHOD /Users|/Groups", statuses, injected faults)
//   GET  /_admin/stats   stats and counts
//   POST /_admin/reset   empties every SCIM and user table; the connection and its token stay
//   POST /_admin/revoke  revokes the current token (later requests answer 401)
//   POST /_admin/token   issues a new token for the same connection: {"token": "..."}
// Optional fault injection: --faults SPEC and --seed N, as faults.js describes.
import express from "express";
import fs from "node:fs";
import { randomBytes, randomUUID, webcrypto } from "node:crypto";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { getAuthTables } from "better-auth/db";
import { toNodeHandler } from "better-auth/node";
import { scim } from "@better-auth/scim";
import { argValue as argOf, parseFaults, seededRandom, newStats, countAndFault, announcePort }
    from "./faults.js";

// Better Auth calls the Web Crypto API through the global, which Node 18 does not define.
if (!globalThis.crypto) globalThis.crypto = webcrypto;

const PROG = "betterauth_server.js";
const args = process.argv.slice(2);
const argValue = (name, dflt) => argOf(args, name, dflt);
const port = Number(argValue("--port", args[0] && !args[0].startsWith("--") ? args[0] : "0"));
const portFile = argValue("--port-file");
const tokenFile = argValue("--token-file");
const faultRules = parseFaults(argValue("--faults", ""), PROG);
const random = seededRandom(Number(argValue("--seed", "1")), PROG);
if (portFile && !tokenFile) {
    console.error(`${PROG}: --port-file needs --token-file (where the issued bearer token goes)`);
    process.exit(2);
}

const BASE_PATH = "/api/auth";
const SCIM_PATH = `${BASE_PATH}/scim/v2`;
const DOMAIN = "scimrun-interop";
const SCOPES = ["scim.users.read", "scim.users.write", "scim.groups.read", "scim.groups.write"];
// Tables a reset keeps: the managed connection, its credentials and events, and the binding
// that fences the connection.
const KEEP = new Set(["scimManagedConnection", "scimManagedCredential", "scimManagedConnectionEvent",
    "scimConnectionBinding"]);

const app = express();
app.disable("x-powered-by");
const server = app.listen(port, "127.0.0.1");
await new Promise((resolve, reject) => { server.once("listening", resolve); server.once("error", reject); });
const origin = `http://127.0.0.1:${server.address().port}`;

const db = {};
const options = {
    baseURL: origin,
    basePath: BASE_PATH,
    secret: randomBytes(32).toString("hex"),
    database: memoryAdapter(db),
    rateLimit: { enabled: false },
    telemetry: { enabled: false },
    logger: { level: "error" },
    plugins: [scim({
        connections: [],
        managedConnections: { credentialHashSecret: randomBytes(32).toString("hex"), lastUsedWriteIntervalSeconds: 3600 },
    })],
};
// Tables created at start: the memory adapter refuses a model it has no array for.
const tables = getAuthTables(options);
for (const t of Object.values(tables)) db[t.modelName] = [];
const auth = betterAuth(options);
const modelName = (key) => tables[key]?.modelName ?? key;
const rows = (key) => db[modelName(key)] ?? [];

// The token: one managed connection, credentials issued and revoked through the plugin's own
// server-side endpoints.
const inAYear = () => new Date(Date.now() + 365 * 24 * 3600 * 1000);
const created = await auth.api.createSCIMManagedConnection({
    body: { creationRequestId: `scimrun-interop-${randomUUID()}`, provisioningDomainId: DOMAIN,
        actorId: "scimrun-interop", scopes: SCOPES, expiresAt: inAYear() },
});
const connectionId = created.connection.connectionId;
let current = { token: created.token, credentialId: created.credential.credentialId };
const issued = new Set([current.token]);

// ifMatch: SCIM requests that carried an If-Match header (a client that read etag.supported =
// false from /ServiceProviderConfig sends none).
const newStatsState = () => ({ writes: { POST: 0, PUT: 0, PATCH: 0, DELETE: 0 }, ifMatch: 0, stats: newStats() });
let counters = newStatsState();

const parse = (s, dflt) => {
    if (typeof s !== "string" || s === "") return dflt;
    try { return JSON.parse(s); } catch { return dflt; }
};
const iso = (d) => (d instanceof Date ? d.toISOString() : d);

// The server's own records, from its tables (not through its SCIM answers).
const dumpUsers = () => rows("scimUser").map((u) => {
    const attrs = parse(u.serializedAttributes, {});
    delete attrs.schemas;
    return {
        ...attrs,
        id: u.id,
        userName: u.userName,
        ...(u.externalId ? { externalId: u.externalId } : {}),
        displayName: u.displayName,
        active: u.active,
        emails: parse(u.serializedEmails, attrs.emails ?? []),
        name: { ...(attrs.name ?? {}), formatted: u.formattedName,
            ...(u.givenName ? { givenName: u.givenName } : {}), ...(u.familyName ? { familyName: u.familyName } : {}) },
        userId: u.userId,
        meta: { created: iso(u.createdAt), lastModified: iso(u.updatedAt) },
    };
});
const dumpGroups = () => {
    const members = new Map();
    for (const m of [...rows("scimGroupMember")].sort((a, b) => a.createdAt - b.createdAt)) {
        if (!members.has(m.groupId)) members.set(m.groupId, []);
        members.get(m.groupId).push({ value: m.scimUserId });
    }
    return rows("scimGroup").map((g) => ({
        id: g.id, displayName: g.displayName, ...(g.externalId ? { externalId: g.externalId } : {}),
        members: members.get(g.id) ?? [],
        meta: { created: iso(g.createdAt), lastModified: iso(g.updatedAt) },
    }));
};

app.get("/_admin/dump", (req, res) => {
    res.json({
        users: dumpUsers(), groups: dumpGroups(),
        authUsers: rows("user").map((u) => ({ id: u.id, email: u.email, name: u.name })),
        writes: counters.writes, preconditionFailed: 0, ifMatch: counters.ifMatch, stats: counters.stats,
    });
});
app.get("/_admin/stats", (req, res) => {
    res.json({ ...counters.stats, users: rows("scimUser").length, groups: rows("scimGroup").length,
        faults: argValue("--faults", ""), seed: Number(argValue("--seed", "1")) });
});
app.post("/_admin/reset", (req, res) => {
    for (const t of Object.values(tables)) {
        if (!KEEP.has(t.modelName)) db[t.modelName] = [];
    }
    counters = newStatsState();
    res.status(204).end();
});
app.post("/_admin/revoke", async (req, res, next) => {
    try {
        await auth.api.revokeSCIMManagedCredential({
            body: { connectionId, provisioningDomainId: DOMAIN, credentialId: current.credentialId,
                actorId: "scimrun-interop" },
        });
        issued.delete(current.token);
        res.status(204).end();
    } catch (e) { next(e); }
});
app.post("/_admin/token", async (req, res, next) => {
    try {
        const rotated = await auth.api.rotateSCIMManagedCredential({
            body: { connectionId, provisioningDomainId: DOMAIN, actorId: "scimrun-interop", scopes: SCOPES,
                expiresAt: inAYear() },
        });
        current = { token: rotated.token, credentialId: rotated.credential.credentialId };
        issued.add(current.token);
        res.json({ token: current.token });
    } catch (e) { next(e); }
});

const bearer = (req) => (req.header("Authorization") ?? "").replace(/^Bearer\s+/i, "");
app.use(SCIM_PATH, countAndFault({
    authenticated: (req) => issued.has(bearer(req)), stats: () => counters.stats, rules: faultRules, random,
}));
app.use(SCIM_PATH, (req, res, next) => {
    if (req.header("If-Match") !== undefined) counters.ifMatch += 1;
    if (issued.has(bearer(req)) && counters.writes[req.method] !== undefined) {
        const writes = counters.writes;
        res.on("finish", () => { if (res.statusCode < 300) writes[req.method] += 1; });
    }
    next();
});
// Better Auth reads the raw body itself: no body parser in front of it.
app.all(`${BASE_PATH}/*`, toNodeHandler(auth));

if (portFile) {
    fs.writeFileSync(`${tokenFile}.tmp`, current.token, { mode: 0o600 });
    fs.renameSync(`${tokenFile}.tmp`, tokenFile);
    announcePort(server.address().port, portFile);
} else {
    console.log(`${origin}${SCIM_PATH}`);
    console.log(current.token);
}
process.on("SIGTERM", () => server.close(() => process.exit(0)));
