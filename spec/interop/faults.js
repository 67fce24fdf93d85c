// What the interop servers (server.js: scimmy, betterauth_server.js: better-auth) share:
// command-line values, request statistics and the optional fault injection.
//   --faults SPEC   comma-separated STATUS:PROBABILITY[@retry-after=SECONDS] tokens (STATUS
//                   400-599), e.g. `429:0.03@retry-after=1` or `503:0.05,429:0.03`: that
//                   fraction of authenticated SCIM requests is answered with that status (a SCIM
//                   error; 429 carries Retry-After: 1 unless given) before it is handled.
//   --seed N        seed of the draws (default 1): one draw per request from a mulberry32
//                   generator, so the same spec and seed fault the same request numbers.
import fs from "node:fs";

export const argValue = (args, name, dflt) => {
    const i = args.indexOf(name);
    return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};

// --faults: [{ status, p, retryAfter }]; exits 2 naming the bad token.
export const parseFaults = (spec, prog) => {
    const rules = [];
    let total = 0;
    for (const tok of spec.split(",").map((t) => t.trim()).filter(Boolean)) {
        const m = tok.match(/^(\d{3}):([0-9.]+)(?:@retry-after=(\d+))?$/);
        const status = m && Number(m[1]);
        const p = m && Number(m[2]);
        if (!m || status < 400 || status > 599 || !(p >= 0 && p <= 1)) {
            console.error(`${prog}: bad fault '${tok}': expected STATUS:PROBABILITY[@retry-after=SECONDS], e.g. 429:0.03@retry-after=1`);
            process.exit(2);
        }
        total += p;
        rules.push({ status, p, retryAfter: m[3] ?? (status === 429 ? "1" : undefined) });
    }
    if (total > 1) {
        console.error(`${prog}: bad fault spec '${spec}': the probabilities add up to more than 1`);
        process.exit(2);
    }
    return rules;
};

// A seeded mulberry32 generator: () => [0, 1).
export const seededRandom = (seed, prog) => {
    if (!Number.isInteger(seed)) {
        console.error(`${prog}: --seed must be an integer`);
        process.exit(2);
    }
    let state = seed >>> 0;
    return () => {
        state = (state + 0x6d2b79f5) >>> 0;
        let t = state;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
};

export const newStats = () => ({ requests: {}, statuses: {}, injected: {}, rejected: {} });
const bump = (table, key) => { table[key] = (table[key] ?? 0) + 1; };

export const scimError = (res, status, detail, scimType) => {
    res.status(status).type("application/scim+json").send(JSON.stringify({
        schemas: ["urn:ietf:params:scim:api:messages:2.0:Error"], status: String(status),
        ...(scimType ? { scimType } : {}), detail,
    }));
};

// Express middleware for the SCIM mount point: for requests `authenticated(req)` accepts,
// counts "METHOD /Users|/Groups|/other" and the status of every answer into stats(), and
// answers the drawn fraction with an injected fault before anything else sees the request.
// Requests it refuses (no token, a wrong or revoked one) are counted by route in
// stats().rejected only, and left to the server to answer (401).
export const countAndFault = ({ authenticated, stats, rules, random }) => (req, res, next) => {
    const kind = req.path.match(/^\/(Users|Groups)(?:\/|$)/);
    const route = `${req.method} /${kind ? kind[1] : "other"}`;
    if (!authenticated(req)) {
        bump(stats().rejected, route);
        return next();
    }
    res.on("finish", () => { bump(stats().requests, route); bump(stats().statuses, String(res.statusCode)); });
    if (rules.length === 0) return next();
    const u = random();
    let acc = 0;
    for (const r of rules) {
        acc += r.p;
        if (u < acc) {
            bump(stats().injected, String(r.status));
            if (r.retryAfter !== undefined) res.setHeader("Retry-After", r.retryAfter);
            return scimError(res, r.status, `injected fault: HTTP ${r.status}`);
        }
    }
    return next();
};

// Writes the chosen port to portFile atomically (the specs poll for it), or prints it.
export const announcePort = (port, portFile) => {
    if (portFile) {
        fs.writeFileSync(`${portFile}.tmp`, String(port));
        fs.renameSync(`${portFile}.tmp`, portFile);
    } else {
        console.log(port);
    }
};
