import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { loadConfig, resolveConfig } from "../../src/config/load-config.js";
import { redactConfig } from "../../src/config/redact.js";
import { ConfigError } from "../../src/errors.js";

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-config-"));
  await writeFile(join(dir, "tls.crt"), "not really a cert");
  await writeFile(join(dir, "tls.key"), "not really a key");
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The problem lines a document produces, or [] when it is valid. */
function problemsOf(raw: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): readonly string[] {
  try {
    resolveConfig(raw, { configDir: dir, env });
    return [];
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    return error.problems;
  }
}

describe("config validation", () => {
  it("names an unknown key", () => {
    assert.deepEqual(problemsOf({ listners: [] }), ["listners: unknown key"]);
    assert.deepEqual(problemsOf({ http: { port: 9100, bind: "x" } }), ["http.bind: unknown key"]);
  });

  it("names a value of the wrong type", () => {
    assert.deepEqual(problemsOf({ listeners: [{ type: "tcp", port: "1883" }] }), [
      'listeners[0].port: must be a number, got the string "1883"',
    ]);
    assert.deepEqual(problemsOf({ log: { level: "loud" } }), [
      'log.level: must be one of "fatal", "error", "warn", "info", "debug", "trace", "silent", got the string "loud"',
    ]);
  });

  it("names an unknown listener type", () => {
    assert.deepEqual(problemsOf({ listeners: [{ type: "udp" }] }), [
      "listeners[0].type: must be one of tcp, tls, ws, wss",
    ]);
  });

  it("takes limits.maxTopicBytes up to MQTT's 65535, default 4096", () => {
    const { config } = resolveConfig({}, { configDir: dir, env: {} });
    assert.equal(config.limits.maxTopicBytes, 4096);
    assert.deepEqual(problemsOf({ limits: { maxTopicBytes: 1024 } }), []);
    assert.deepEqual(problemsOf({ limits: { maxTopicBytes: 65_536 } }), [
      "limits.maxTopicBytes: must be at most 65535, the longest topic MQTT can carry",
    ]);
    assert.deepEqual(problemsOf({ limits: { maxTopicBytes: 0 } }), [
      "limits.maxTopicBytes: must be at least 1 (bytes)",
    ]);
  });

  it("refuses a port out of range", () => {
    assert.deepEqual(problemsOf({ listeners: [{ type: "tcp", port: 70000 }] }), [
      "listeners[0].port: must be a port between 0 and 65535",
    ]);
  });

  it("refuses two listeners on one port, including the HTTP port", () => {
    assert.deepEqual(
      problemsOf({
        listeners: [
          { type: "tcp", host: "0.0.0.0", port: 1883 },
          { type: "ws", host: "127.0.0.1", port: 1883 },
        ],
        http: { host: "127.0.0.1", port: 1883 },
      }),
      [
        "listeners[1].port: port 1883 is already used by listeners[0].port",
        "http.port: port 1883 is already used by listeners[0].port",
      ],
    );
    // Different hosts, both specific, may share a port number.
    assert.deepEqual(
      problemsOf({
        listeners: [
          { type: "tcp", host: "127.0.0.1", port: 1883 },
          { type: "tcp", host: "127.0.0.2", port: 1883 },
        ],
      }),
      [],
    );
  });

  it("refuses missing certificate files and names each", () => {
    assert.deepEqual(
      problemsOf({
        listeners: [{ type: "tls", cert: "tls.crt", key: "missing.key", ca: "missing-ca.crt" }],
      }),
      [
        `listeners[0].key: file not found or not readable: ${join(dir, "missing.key")}`,
        `listeners[0].ca: file not found or not readable: ${join(dir, "missing-ca.crt")}`,
      ],
    );
  });

  it("requires a CA when client certificates are required", () => {
    assert.deepEqual(
      problemsOf({
        listeners: [
          {
            type: "tls",
            cert: "tls.crt",
            key: "tls.key",
            requestCert: true,
            requireClientCert: true,
          },
        ],
      }),
      [
        "listeners[0].ca: required when requireClientCert is true (client certificates must chain to it)",
      ],
    );
  });

  it("reports every problem at once", () => {
    const problems = problemsOf({
      bogus: true,
      listeners: [{ type: "tcp", port: -1 }],
      shutdown: { drainSeconds: "x" },
    });
    assert.equal(problems.length, 3, problems.join("\n"));
  });

  it("takes exactly one Redis form: url, sentinels with a name, or cluster nodes", () => {
    const node = { host: "127.0.0.1", port: 7000 };
    assert.deepEqual(problemsOf({ redis: { cluster: [node] } }), []);
    assert.deepEqual(problemsOf({ redis: { sentinels: [node], name: "primary" } }), []);
    assert.deepEqual(problemsOf({ redis: { keyPrefix: "x:" } }), [
      "redis: needs url, or sentinels and name, or cluster",
    ]);
    assert.deepEqual(
      problemsOf({ redis: { cluster: [node] } }, { SLUICE_REDIS_URL: "redis://r" }),
      ["redis: give only one of url, sentinels or cluster (got url, cluster)"],
    );
    assert.deepEqual(problemsOf({ redis: { sentinels: [node] } }), [
      "redis.name: required with sentinels",
    ]);
    assert.deepEqual(problemsOf({ redis: { cluster: [] } }), [
      "redis.cluster: needs at least one node",
    ]);
  });

  it("checks the Redis TLS files: cert with key, each readable", () => {
    const url = "rediss://redis:6380";
    assert.deepEqual(problemsOf({ redis: { url, tls: { ca: "tls.crt" } } }), []);
    assert.deepEqual(problemsOf({ redis: { url, tls: { cert: "tls.crt" } } }), [
      "redis.tls: cert and key go together",
    ]);
    assert.deepEqual(problemsOf({ redis: { url, tls: { ca: "missing-ca.crt" } } }), [
      `redis.tls.ca: file not found or not readable: ${join(dir, "missing-ca.crt")}`,
    ]);
  });

  it("takes proxyProtocol only with trusted proxies, and trustedProxies only as addresses or CIDRs", () => {
    const tcp = { type: "tcp", port: 0 };
    assert.deepEqual(
      problemsOf({ listeners: [{ ...tcp, proxyProtocol: true, trustedProxies: ["10.0.0.0/8"] }] }),
      [],
    );
    assert.deepEqual(problemsOf({ listeners: [{ ...tcp, proxyProtocol: true }] }), [
      "listeners[0].trustedProxies: required with proxyProtocol",
    ]);
    assert.deepEqual(
      problemsOf({
        listeners: [{ type: "ws", port: 0, trustedProxies: ["fd00::/8", "192.0.2.7"] }],
      }),
      [],
    );
    for (const bad of ["10.0.0.0/33", "300.0.0.0/8", "fd00::/129", "10.0.0.0/8/8", "::g"]) {
      assert.deepEqual(
        problemsOf({ listeners: [{ ...tcp, trustedProxies: [bad] }] }),
        ["listeners[0].trustedProxies[0]: must be an IP address or CIDR, e.g. 10.0.0.0/8"],
        bad,
      );
    }
  });

  it("takes noDelay on tcp and tls listeners, on by default", () => {
    const { config } = resolveConfig(
      {
        listeners: [
          { type: "tcp", port: 0 },
          { type: "tcp", port: 0, noDelay: false },
        ],
      },
      { configDir: dir, env: {} },
    );
    assert.deepEqual(
      config.listeners.map((l) => ("noDelay" in l ? l.noDelay : undefined)),
      [true, false],
    );
    assert.deepEqual(problemsOf({ listeners: [{ type: "tcp", port: 0, noDelay: "no" }] }), [
      'listeners[0].noDelay: must be a boolean, got the string "no"',
    ]);
  });

  it("takes admin with token digests or client certificates, TLS off loopback, and a registry home", () => {
    const digest = "a".repeat(64);
    const registry = { file: "devices.json" };
    assert.deepEqual(problemsOf({ admin: { tokens: [digest] }, registry }), []);
    assert.deepEqual(problemsOf({ admin: { tokens: ["secret"] }, registry }), [
      "admin.tokens[0]: must be the SHA-256 hex of a token",
    ]);
    assert.deepEqual(problemsOf({ admin: {}, registry }), [
      "admin: needs tokens, or tls.ca so that client certificates authenticate admins",
    ]);
    assert.deepEqual(problemsOf({ admin: { host: "0.0.0.0", tokens: [digest] }, registry }), [
      "admin.tls: required when admin.host (0.0.0.0) is not a loopback address",
    ]);
    assert.deepEqual(
      problemsOf({
        admin: { host: "0.0.0.0", tls: { cert: "tls.crt", key: "tls.key", ca: "tls.crt" } },
        registry,
      }),
      [],
    );
    assert.deepEqual(problemsOf({ admin: { tokens: [digest] } }), [
      "registry.file: required with admin on a node without redis (where the device registry is kept)",
    ]);
    assert.deepEqual(
      problemsOf({
        admin: { tokens: [digest], ca: { cert: "nope.crt", key: "tls.key" } },
        registry,
      }),
      [`admin.ca.cert: file not found or not readable: ${join(dir, "nope.crt")}`],
    );
  });

  it("queue limits: defaults, accepted values and clear errors", () => {
    const { config } = resolveConfig({}, { configDir: dir, env: {} });
    assert.equal(config.limits.queue.maxInflight, 100);
    assert.equal(config.limits.queue.maxQueuedPerClient, 10_000);
    assert.equal(config.limits.queue.maxBufferedBytes, 262_144);
    assert.deepEqual(problemsOf({ limits: { queue: { maxBufferedBytes: 1_024 } } }), [
      "limits.queue.maxBufferedBytes: must be at least 16384",
    ]);
    assert.deepEqual(
      problemsOf({ limits: { queue: { maxInflight: 20, maxQueuedPerClient: 1_000 } } }),
      [],
    );
    assert.deepEqual(problemsOf({ limits: { queue: { maxInflight: 0 } } }), [
      "limits.queue.maxInflight: must be at least 1",
    ]);
    assert.deepEqual(problemsOf({ limits: { queue: { maxInflight: 70_000 } } }), [
      "limits.queue.maxInflight: must be at most 65535 (the packet identifiers a client can have in flight)",
    ]);
    assert.deepEqual(problemsOf({ limits: { queue: { maxQueuedPerClient: 2.5 } } }), [
      "limits.queue.maxQueuedPerClient: must be an int, got number 2.5",
    ]);
    assert.deepEqual(problemsOf({ limits: { queue: { maxQueuedPerClient: "10k" } } }), [
      'limits.queue.maxQueuedPerClient: must be a number, got the string "10k"',
    ]);
    assert.deepEqual(
      problemsOf({ limits: { queue: { maxInflight: 50, maxQueuedPerClient: 10 } } }),
      ["limits.queue.maxQueuedPerClient: must be at least limits.queue.maxInflight (50)"],
    );
  });
});

describe("config defaults and overrides", () => {
  it("without a file: one local TCP listener, local HTTP, anonymous allowed with a warning", () => {
    const { config, warnings } = loadConfig({ env: {} });
    assert.deepEqual(
      config.listeners.map((l) => [l.type, l.host, l.port]),
      [["tcp", "127.0.0.1", 1883]],
    );
    assert.equal(config.http.host, "127.0.0.1");
    assert.equal(config.http.port, 9100);
    assert.equal(config.auth.allowAnonymous, true);
    assert.match(warnings.join("\n"), /anonymous/);
  });

  it("with a file: anonymous access is off unless the file turns it on", async () => {
    const file = join(dir, "minimal.yaml");
    await writeFile(file, "listeners:\n  - { type: tcp, port: 0 }\n");
    assert.equal(loadConfig({ file, env: {} }).config.auth.allowAnonymous, false);
  });

  it("SLUICE_* environment variables win over the file", async () => {
    const file = join(dir, "with-env.yaml");
    await writeFile(
      file,
      "nodeId: from-file\nlog: { level: info }\nlisteners:\n  - { type: tcp, port: 0 }\n",
    );
    const { config } = loadConfig({
      file,
      env: { SLUICE_NODE_ID: "from-env", SLUICE_LOG_LEVEL: "debug" },
    });
    assert.equal(config.nodeId, "from-env");
    assert.equal(config.log.level, "debug");
  });

  it("takes Redis passwords from the environment, and redacts them", () => {
    const { config } = resolveConfig(
      { redis: { sentinels: [{ host: "s1", port: 26379 }], name: "primary" } },
      {
        configDir: dir,
        env: { SLUICE_REDIS_PASSWORD: "pw-from-env", SLUICE_REDIS_SENTINEL_PASSWORD: "spw" },
      },
    );
    assert.equal(config.redis?.password, "pw-from-env");
    assert.equal(config.redis?.sentinelPassword, "spw");
    assert.doesNotMatch(JSON.stringify(redactConfig(config)), /pw-from-env|"spw"/);
  });

  it("names the environment variable when its value is invalid", () => {
    assert.deepEqual(problemsOf({}, { SLUICE_NODE_ID: "bad id!" }), [
      "nodeId (from SLUICE_NODE_ID): must be 1-128 characters of A-Z a-z 0-9 . _ -",
    ]);
  });

  it("SLUICE_CONFIG names the file when no --config is given", async () => {
    const file = join(dir, "via-env.yaml");
    await writeFile(file, "nodeId: via-env\nlisteners:\n  - { type: tcp, port: 0 }\n");
    assert.equal(loadConfig({ env: { SLUICE_CONFIG: file } }).config.nodeId, "via-env");
  });

  it("resolves relative paths against the config file's folder", () => {
    const { config } = resolveConfig(
      { listeners: [{ type: "tls", cert: "tls.crt", key: "tls.key" }] },
      { configDir: dir, env: {} },
    );
    const [listener] = config.listeners;
    assert.ok(listener?.type === "tls");
    assert.equal(listener.cert, join(dir, "tls.crt"));
  });

  it("defaults the node id to host name and process id", () => {
    const { config } = resolveConfig({}, { env: { HOSTNAME: "plant-7" } });
    assert.equal(config.nodeId, `plant-7-${process.pid}`);
  });

  it("returns a frozen config", () => {
    const { config } = resolveConfig({}, { env: {} });
    assert.ok(Object.isFrozen(config));
    assert.ok(Object.isFrozen(config.listeners[0]));
  });

  it("reports a YAML syntax error with its position", async () => {
    const file = join(dir, "broken.yaml");
    await writeFile(file, "listeners:\n  - { type: tcp, port: 1883\n");
    assert.throws(
      () => loadConfig({ file, env: {} }),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.match(error.problems[0] ?? "", /YAML syntax error at line \d+ column \d+/);
        return true;
      },
    );
  });
});

describe("config redaction", () => {
  it("hides secrets and URL passwords", () => {
    const redacted = JSON.stringify(
      redactConfig({
        nodeId: "n",
        listeners: [{ type: "tls", passphrase: "hunter2" }],
        redis: { url: "redis://user:s3cret@redis:6379", password: "pw" },
      } as never),
    );
    assert.doesNotMatch(redacted, /hunter2|s3cret|"pw"/);
    assert.match(redacted, /\[redacted\]/);
  });
});
