import assert from "node:assert/strict";
import { mkdtemp, rm, truncate, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createTestPki } from "../../harness/certs.js";
import { freePort } from "../../harness/free-port.js";
import { connect, end, type MqttClient } from "../../harness/mqtt-client.js";
import { runCli, SluiceProcess } from "../../harness/sluice-process.js";
import { hashPassword } from "../../src/security/password-hash.js";

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-lifecycle-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function configFile(name: string, yaml: string): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, yaml);
  return file;
}

const LOCAL = `
listeners:
  - { type: tcp, host: 127.0.0.1, port: 0 }
http: { host: 127.0.0.1, port: 0 }
auth: { allowAnonymous: true }
`;

describe("graceful shutdown", () => {
  it("SIGTERM: /readyz turns 503 first, clients leave spread over drainSeconds, exit 0", async () => {
    const drainSeconds = 2;
    const file = await configFile(
      "drain.yaml",
      `${LOCAL}shutdown: { drainSeconds: ${drainSeconds} }\n`,
    );
    const node = SluiceProcess.spawn(["start", "--config", file]);
    const clients: MqttClient[] = [];
    try {
      const { ports, httpPort } = await node.ready();
      const readyz = () => fetch(`http://127.0.0.1:${httpPort}/readyz`).then((r) => r.status);
      assert.equal(await readyz(), 200);

      const closedAt: number[] = [];
      for (let i = 0; i < 10; i++) {
        const client = await connect(`mqtt://127.0.0.1:${ports.tcp}`, { clientId: `drain-${i}` });
        client.on("close", () => closedAt.push(Date.now()));
        clients.push(client);
      }

      const signalledAt = Date.now();
      node.kill("SIGTERM");
      await node.waitForEvent("drain.started");
      assert.equal(await readyz(), 503, "not ready while draining");
      assert.ok(closedAt.length < clients.length, "the 503 came before every client was gone");

      const { code } = await node.exited;
      const elapsed = Date.now() - signalledAt;
      assert.equal(code, 0);
      assert.equal(closedAt.length, clients.length, "every client was disconnected");
      const spread = Math.max(...closedAt) - Math.min(...closedAt);
      assert.ok(spread >= drainSeconds * 1000 * 0.5, `disconnects spread over ${spread} ms`);
      assert.ok(elapsed < drainSeconds * 1000 + 5_000, `exited after ${elapsed} ms`);
      assert.ok(node.lines.some((l) => l.event === "node.stopped"));
    } finally {
      node.kill();
      await end(...clients);
    }
  });

  it("refuses new connections once draining: the port is closed (a load balancer redispatches)", async () => {
    const file = await configFile("refuse.yaml", `${LOCAL}shutdown: { drainSeconds: 30 }\n`);
    const node = SluiceProcess.spawn(["start", "--config", file]);
    let client: MqttClient | undefined;
    try {
      const { ports } = await node.ready();
      client = await connect(`mqtt://127.0.0.1:${ports.tcp}`);
      node.kill("SIGTERM");
      await node.waitForEvent("drain.started");
      await assert.rejects(connect(`mqtt://127.0.0.1:${ports.tcp}`), /ECONNREFUSED/);
    } finally {
      node.kill();
      await end(client);
    }
  });

  it("a second signal exits at once", async () => {
    const file = await configFile("second.yaml", `${LOCAL}shutdown: { drainSeconds: 300 }\n`);
    const node = SluiceProcess.spawn(["start", "--config", file]);
    const clients: MqttClient[] = [];
    try {
      const { ports } = await node.ready();
      for (let i = 0; i < 3; i++) clients.push(await connect(`mqtt://127.0.0.1:${ports.tcp}`));
      node.kill("SIGTERM");
      await node.waitForEvent("drain.started");
      node.kill("SIGINT");
      const { code } = await node.exited;
      assert.equal(code, 1);
      assert.ok(node.lines.some((l) => l.event === "shutdown.forced"));
    } finally {
      node.kill();
      await end(...clients);
    }
  });
});

describe("logs", () => {
  it("at debug level, connection events are logged but never payloads or passwords", async () => {
    const file = await configFile(
      "log-debug.yaml",
      `${LOCAL}log: { level: debug, format: json }\n`,
    );
    const node = SluiceProcess.spawn(["start", "--config", file]);
    let client: MqttClient | undefined;
    try {
      const { ports } = await node.ready();
      client = await connect(`mqtt://127.0.0.1:${ports.tcp}`, {
        clientId: "logged-client",
        username: "operator",
        password: "hunter2-PASSWORD",
        will: { topic: "w", payload: Buffer.from("WILL-PAYLOAD"), qos: 0, retain: false },
      });
      await client.publishAsync("plant/x", "SECRET-PAYLOAD", { qos: 1 });
      await client.endAsync();
      await node.waitForLog(
        (l) => l.event === "client.disconnected" && l.clientId === "logged-client",
      );
      node.kill("SIGTERM");
      await node.exited;
      assert.ok(
        node.lines.some((l) => l.event === "client.connected" && l.clientId === "logged-client"),
      );
      const everything = JSON.stringify(node.lines) + node.stderr;
      for (const secret of ["hunter2-PASSWORD", "SECRET-PAYLOAD", "WILL-PAYLOAD"]) {
        assert.ok(!everything.includes(secret), `${secret} must not be logged`);
      }
    } finally {
      node.kill();
      await end(client);
    }
  });

  it("security events go to the audit log with a reason, never with the password", async () => {
    await writeFile(join(dir, "audit.passwd"), `rtu-1:${await hashPassword("right-password")}\n`);
    const file = await configFile(
      "audit.yaml",
      "listeners:\n  - { type: tcp, host: 127.0.0.1, port: 0 }\nhttp: { host: 127.0.0.1, port: 0 }\n" +
        "auth: { passwordFile: audit.passwd }\nlog: { level: info, format: json }\n",
    );
    const node = SluiceProcess.spawn(["start", "--config", file]);
    let client: MqttClient | undefined;
    try {
      const { ports } = await node.ready();
      const url = `mqtt://127.0.0.1:${ports.tcp}`;
      await assert.rejects(
        connect(url, { clientId: "rtu-1", username: "rtu-1", password: "WRONG-secret" }),
      );
      client = await connect(url, {
        clientId: "rtu-1",
        username: "rtu-1",
        password: "right-password",
      });
      const failed = await node.waitForLog((l) => l.event === "audit.auth_failed");
      const succeeded = await node.waitForLog((l) => l.event === "audit.auth_succeeded");
      assert.equal(failed.log, "audit");
      assert.equal(failed.reason, "bad_password");
      assert.equal(failed.clientId, "rtu-1");
      assert.equal(failed.username, "rtu-1");
      assert.equal(failed.remoteAddress, "127.0.0.1");
      assert.equal(failed.listener, "tcp");
      assert.equal(succeeded.method, "password");
      const everything = JSON.stringify(node.lines) + node.stderr;
      assert.ok(!everything.includes("WRONG-secret") && !everything.includes("right-password"));
    } finally {
      await end(client);
      node.kill();
    }
  });

  it("log.format pretty writes human-readable lines", async () => {
    const file = await configFile(
      "log-pretty.yaml",
      `${LOCAL}log: { level: info, format: pretty }\n`,
    );
    const node = SluiceProcess.spawn(["start", "--config", file]);
    try {
      const line = await node.waitForLog(
        (l) => typeof l.msg === "string" && l.msg.includes("node ready"),
      );
      assert.equal(line.event, undefined, "not a JSON line");
      assert.match(String(line.msg), /INFO/);
      node.kill("SIGTERM");
      assert.equal((await node.exited).code, 0);
    } finally {
      node.kill();
    }
  });
});

describe("log format from the environment", () => {
  it("SLUICE_LOG_FORMAT=pretty: readable lines, and audit lines keep their fields", async () => {
    await writeFile(join(dir, "pretty.passwd"), `rtu-9:${await hashPassword("right-password")}\n`);
    const port = await freePort();
    const file = await configFile(
      "pretty-env.yaml",
      `listeners:\n  - { type: tcp, host: 127.0.0.1, port: ${port} }\nhttp: { host: 127.0.0.1, port: 0 }\n` +
        "auth: { passwordFile: pretty.passwd }\nlog: { level: info, format: json }\n",
    );
    const node = SluiceProcess.spawn(["start", "--config", file], { SLUICE_LOG_FORMAT: "pretty" });
    try {
      await node.waitForLog((l) => typeof l.msg === "string" && l.msg.includes("node ready"));
      await assert.rejects(
        connect(`mqtt://127.0.0.1:${port}`, {
          clientId: "rtu-9",
          username: "rtu-9",
          password: "WRONG-secret",
        }),
      );
      const has = (text: string) =>
        node.waitForLog((l) => typeof l.msg === "string" && l.msg.includes(text));
      const heading = await has("authentication failed: bad_password");
      assert.equal(heading.event, undefined, "not a JSON line");
      await has('event: "audit.auth_failed"');
      await has('reason: "bad_password"');
      await has('clientId: "rtu-9"');
      await has('remoteAddress: "127.0.0.1"');
      assert.ok(!node.lines.some((l) => JSON.stringify(l).includes("WRONG-secret")));
      node.kill("SIGTERM");
      assert.equal((await node.exited).code, 0);
    } finally {
      node.kill();
    }
  });
});

describe("reload on SIGHUP", () => {
  it("reloads the ACL; a broken one is rejected and the node keeps running", async () => {
    await writeFile(join(dir, "hup.acl"), "user ops\ntopic read ops/#\n");
    const file = await configFile(
      "hup.yaml",
      `${LOCAL}acl: { file: hup.acl }\nlog: { level: info, format: json }\n`,
    );
    const node = SluiceProcess.spawn(["start", "--config", file]);
    try {
      await node.ready();
      await writeFile(join(dir, "hup.acl"), "user ops\ntopic read ops/#\ntopic read also/#\n");
      node.kill("SIGHUP");
      const reloaded = await node.waitForLog((l) => l.event === "reload.acl" && l.rules === 2);
      assert.equal(reloaded.rules, 2);
      await writeFile(join(dir, "hup.acl"), "user ops\nbogus line\n");
      node.kill("SIGHUP");
      const failed = await node.waitForEvent("reload.failed");
      assert.deepEqual(failed.problems, [
        `hup.acl:2: unknown keyword "bogus" (expected topic, pattern, user or group)`,
      ]);
      assert.match(
        String((failed.err as { message?: string }).message),
        /hup\.acl:2: unknown keyword/,
      );
      node.kill("SIGTERM");
      assert.equal((await node.exited).code, 0);
    } finally {
      node.kill();
    }
  });
});

describe("wills during a drain", () => {
  async function drainWithWill(publishWills: boolean): Promise<SluiceProcess> {
    const file = await configFile(
      `wills-${publishWills}.yaml`,
      `${LOCAL}shutdown: { drainSeconds: 0, publishWills: ${publishWills} }\n`,
    );
    const node = SluiceProcess.spawn(["start", "--config", file]);
    let device: MqttClient | undefined;
    try {
      const { ports } = await node.ready();
      device = await connect(`mqtt://127.0.0.1:${ports.tcp}`, {
        clientId: "rtu-9",
        will: { topic: "status/rtu-9", payload: Buffer.from("offline"), qos: 1, retain: true },
      });
      node.kill("SIGTERM");
      assert.equal((await node.exited).code, 0);
      return node;
    } finally {
      node.kill();
      await end(device);
    }
  }

  it("by default a drained client's will is not published: the device did not fail", async () => {
    const node = await drainWithWill(false);
    assert.ok(node.lines.some((l) => l.event === "drain.finished"));
    assert.ok(!node.lines.some((l) => l.event === "client.will_published"));
  });

  it("with shutdown.publishWills the drain publishes them", async () => {
    const node = await drainWithWill(true);
    assert.ok(
      node.lines.some((l) => l.event === "client.will_published" && l.clientId === "rtu-9"),
    );
  });
});

describe("start and check-config", () => {
  it("start with a bad config exits 2 with one line per problem and no stack trace", async () => {
    const file = await configFile(
      "bad.yaml",
      "listeners:\n  - { type: tcp, port: 99999 }\nbogus: 1\n",
    );
    const { code, stderr } = await runCli(["start", "--config", file]);
    assert.equal(code, 2);
    assert.match(stderr, /^listeners\[0\]\.port: must be a port between 0 and 65535$/m);
    assert.match(stderr, /^bogus: unknown key$/m);
    assert.doesNotMatch(stderr, /\n\s+at /, "no stack trace");
  });

  it("start with a missing config file exits 2", async () => {
    const { code, stderr } = await runCli(["start", "--config", join(dir, "absent.yaml")]);
    assert.equal(code, 2);
    assert.match(stderr, /cannot be read \(ENOENT\)/);
  });

  it("check-config prints the effective config with secrets redacted", async () => {
    const file = await configFile("good.yaml", `${LOCAL}nodeId: plant-a\nlog: { level: warn }\n`);
    const { code, stdout } = await runCli(["check-config", "--config", file]);
    assert.equal(code, 0);
    assert.match(stdout, /nodeId: plant-a/);
    assert.match(stdout, /drainSeconds: 20/, "defaults are shown");
  });

  it("check-config refuses TLS material that does not load", async () => {
    await writeFile(
      join(dir, "garbage.crt"),
      "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
    );
    await writeFile(join(dir, "garbage.key"), "nope");
    const file = await configFile(
      "bad-tls.yaml",
      "listeners:\n  - { type: tls, port: 0, cert: garbage.crt, key: garbage.key }\n",
    );
    const { code, stderr } = await runCli(["check-config", "--config", file]);
    assert.equal(code, 2);
    assert.match(stderr, /^listeners\[0\]: TLS material does not load: /m);
  });

  describe("check-config sees what start sees: every bad file exits 2 naming it", () => {
    const refused = async (
      name: string,
      yaml: string,
      expected: RegExp,
      command = "check-config",
    ) => {
      const file = await configFile(name, yaml);
      const { code, stderr } = await runCli([command, "--config", file]);
      assert.equal(code, 2, stderr);
      assert.match(stderr, expected);
      assert.doesNotMatch(stderr, /\n\s+at /, "no stack trace");
    };

    it("a password file with a malformed line", async () => {
      await writeFile(join(dir, "bad.passwd"), "ok-user\n");
      await refused(
        "bad-passwd.yaml",
        `${LOCAL.replace("auth: { allowAnonymous: true }", "auth: { passwordFile: bad.passwd }")}`,
        /^bad\.passwd:1: malformed line/m,
      );
    });

    it("an ACL with `user` and no name, for check-config and for start alike", async () => {
      await writeFile(join(dir, "bad.acl"), "topic read a/#\nuser\n");
      const yaml = `${LOCAL}acl: { file: bad.acl }\n`;
      await refused("bad-acl.yaml", yaml, /^bad\.acl:2: user needs a name$/m);
      await refused("bad-acl.yaml", yaml, /^bad\.acl:2: user needs a name$/m, "start");
    });

    it("a YAML alias bomb", async () => {
      const levels = ["a: &a [x, x, x, x, x, x, x, x, x]"];
      for (let i = 1; i < 9; i++) {
        const prev = String.fromCharCode(96 + i);
        const next = String.fromCharCode(97 + i);
        levels.push(`${next}: &${next} [${Array(9).fill(`*${prev}`).join(", ")}]`);
      }
      await refused("bomb.yaml", `${LOCAL}${levels.join("\n")}\n`, /alias count/i);
    });

    it("a duplicate key", async () => {
      await refused("dup.yaml", `${LOCAL}nodeId: a\nnodeId: b\n`, /YAML syntax error.*unique/i);
    });

    it("a config file over its size cap, before parsing it", async () => {
      const file = join(dir, "huge.yaml");
      await writeFile(file, `listeners:\n${"  - 1\n".repeat(200_000)}`);
      const { code, stderr } = await runCli(["check-config", "--config", file]);
      assert.equal(code, 2);
      assert.match(
        stderr,
        /^config file .*huge\.yaml: \d+ bytes is over the limit of 1048576 bytes$/m,
      );
    });

    it("an ACL file over its size cap", async () => {
      const acl = join(dir, "huge.acl");
      await writeFile(acl, "");
      await truncate(acl, 17 * 1024 * 1024);
      await refused(
        "huge-acl.yaml",
        `${LOCAL}acl: { file: huge.acl }\n`,
        /huge\.acl: \d+ bytes is over the limit/,
      );
    });

    it("a Redis client certificate that does not match its key", async () => {
      const pki = await createTestPki();
      try {
        await refused(
          "redis-tls.yaml",
          `${LOCAL}redis: { url: "rediss://127.0.0.1:1", tls: { cert: ${pki.serverCert}, key: ${pki.clientKey} } }\n`,
          /^redis\.tls: TLS material does not load: .*(key values mismatch|KEY_VALUES_MISMATCH)/m,
        );
      } finally {
        await pki.cleanup();
      }
    });
  });

  it("check-config without --config is a usage error (exit 2)", async () => {
    const { code, stderr } = await runCli(["check-config"]);
    assert.equal(code, 2);
    assert.match(stderr, /--config FILE is required/);
  });

  it("an unknown command is a usage error (exit 2)", async () => {
    const { code } = await runCli(["frobnicate"]);
    assert.equal(code, 2);
  });

  it("a port already in use is a runtime failure (exit 1) naming the address", async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      const file = await configFile(
        "busy.yaml",
        `listeners:\n  - { type: tcp, host: 127.0.0.1, port: ${port} }\nhttp: { host: 127.0.0.1, port: 0 }\n`,
      );
      const { code, stderr } = await runCli(["start", "--config", file]);
      assert.equal(code, 1);
      assert.match(stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: EADDRINUSE`));
    } finally {
      blocker.close();
    }
  });
});
