import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { isAbsolute, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { visitFiles } from "../../src/config/file-keys.js";
import { resolveConfig } from "../../src/config/load-config.js";
import { FILE_KEYS } from "../../src/config/schema.js";
import { ConfigError } from "../../src/errors.js";

/** A config naming a file at every file key, each by a relative path: `<key>.pem`. */
const EVERY_FILE = {
  listeners: [
    { type: "tcp", port: 0 },
    { type: "tls", port: 0, cert: "l.cert", key: "l.key", ca: "l.ca", crl: "l.crl" },
    { type: "wss", port: 0, cert: "w.cert", key: "w.key" },
  ],
  http: { port: 0 },
  auth: { passwordFile: "passwd" },
  acl: { file: "acl.conf" },
  redis: { url: "rediss://127.0.0.1:1", tls: { ca: "r.ca", cert: "r.cert", key: "r.key" } },
  admin: {
    port: 0,
    tokens: ["a".repeat(64)],
    tls: { cert: "a.cert", key: "a.key", ca: "a.ca" },
    ca: { cert: "ca.cert", key: "ca.key", chain: "ca.chain" },
  },
  registry: { file: "devices.json" },
};
const READ = [
  ...["l.cert", "l.key", "l.ca", "l.crl", "w.cert", "w.key", "passwd", "acl.conf"],
  ...["r.ca", "r.cert", "r.key", "a.cert", "a.key", "a.ca", "ca.cert", "ca.key", "ca.chain"],
];

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-file-keys-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("keys that name files, read from the schema", () => {
  it("are found in the schema: TLS, password, ACL, Redis, admin and registry files", () => {
    assert.deepEqual(FILE_KEYS.map((k) => `${k.pattern}:${k.use}`).sort(), [
      "acl.file:read",
      "admin.ca.cert:read",
      "admin.ca.chain:read",
      "admin.ca.key:read",
      "admin.tls.ca:read",
      "admin.tls.cert:read",
      "admin.tls.key:read",
      "auth.passwordFile:read",
      "listeners[].ca:read",
      "listeners[].cert:read",
      "listeners[].crl:read",
      "listeners[].key:read",
      "redis.tls.ca:read",
      "redis.tls.cert:read",
      "redis.tls.key:read",
      "registry.file:written",
    ]);
  });

  it("every one is resolved against the config's folder", async () => {
    for (const name of READ) await writeFile(join(dir, name), "");
    const { config } = resolveConfig(EVERY_FILE, { configDir: dir, env: {} });
    const files = visitFiles(config, FILE_KEYS);
    assert.equal(files.length, READ.length + 1);
    for (const { key, path } of files) {
      assert.ok(isAbsolute(path) && path.startsWith(dir), `${key}: ${path}`);
    }
    assert.equal(files.find((f) => f.key === "listeners[1].crl")?.path, join(dir, "l.crl"));
  });

  it("every file that is read must exist; the registry file is made by the node", async () => {
    const empty = await mkdtemp(join(dir, "empty-"));
    try {
      resolveConfig(EVERY_FILE, { configDir: empty, env: {} });
      assert.fail("missing files were accepted");
    } catch (error) {
      assert.ok(error instanceof ConfigError);
      const missing = error.problems.filter((p) => p.includes("file not found"));
      assert.equal(missing.length, READ.length, missing.join("\n"));
      assert.ok(missing.some((p) => p.startsWith("listeners[2].cert: ")));
      assert.ok(!error.problems.some((p) => p.startsWith("registry.file")));
    }
  });
});
