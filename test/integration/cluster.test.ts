import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createTestPki } from "../../harness/certs.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, connectWithConnack, end, Inbox, subscribe } from "../../harness/mqtt-client.js";
import { RedisServer } from "../../harness/redis-server.js";
import { SluiceProcess } from "../../harness/sluice-process.js";
import { ConfigError } from "../../src/errors.js";
import { hashPassword } from "../../src/security/password-hash.js";

/**
 * Two nodes sharing one real Redis (random port, random key prefix): what a client does on one
 * node is seen on the other. Failover and fault tests build on these.
 */
let redis: RedisServer;
let a: RunningNode;
let b: RunningNode;
let prefix: string;

const clusterNode = (nodeId: string, prefix: string) =>
  startNode({ nodeId, redis: { url: redis.url, keyPrefix: prefix } });

before(async () => {
  redis = await RedisServer.start();
  prefix = `t${randomBytes(4).toString("hex")}:`;
  a = await clusterNode("node-a", prefix);
  b = await clusterNode("node-b", prefix);
});
after(async () => {
  await a?.stop();
  await b?.stop();
  await redis?.stop();
});

async function scrape(node: RunningNode): Promise<string> {
  return fetch(`${node.httpUrl}/metrics`).then((r) => r.text());
}

describe("two nodes over Redis", () => {
  it("a message published on one node reaches a subscriber on the other, once", async () => {
    const subscriber = await connect(b.urls.tcp as string);
    const publisher = await connect(a.urls.tcp as string);
    try {
      const inbox = new Inbox(subscriber);
      await subscribe(subscriber, "xnode/#", 1);
      await publisher.publishAsync("xnode/1", "one", { qos: 1 });
      await publisher.publishAsync("xnode/2", "two", { qos: 0 });
      await publisher.publishAsync("xnode/marker", "end", { qos: 1 });
      const messages = await inbox.waitFor(3);
      assert.deepEqual(messages.map((m) => m.payload.toString()).sort(), ["end", "one", "two"]);
      // A further marker proves no duplicate of the first three is on its way.
      await publisher.publishAsync("xnode/marker2", "end2", { qos: 1 });
      const all = await inbox.waitFor(4);
      assert.equal(all[3]?.payload.toString(), "end2");
    } finally {
      await end(subscriber, publisher);
    }
  });

  it("a QoS 0 burst that crosses nodes reaches a subscriber that reads, whole", async () => {
    // The node reads the burst back from Redis many messages at a time and writes them to the
    // subscriber in one loop turn: far over the socket's 16 KiB high-water mark, and still no
    // slow consumer, since the socket had nothing left over from earlier turns.
    const subscriber = await connect(b.urls.tcp as string);
    const publisher = await connect(a.urls.tcp as string);
    try {
      const inbox = new Inbox(subscriber);
      await subscribe(subscriber, "xnode/burst", 1);
      const count = 500;
      const payload = Buffer.alloc(1024, 1);
      for (let i = 0; i < count; i++) publisher.publish("xnode/burst", payload, { qos: 0 });
      // Ordered after the burst on the same topic; QoS 1, so never dropped as slow.
      await publisher.publishAsync("xnode/burst", "end", { qos: 1 });
      while (!inbox.received.some((m) => m.payload.toString() === "end"))
        await inbox.waitFor(inbox.received.length + 1);
      const dropped = /^sluice_dropped_messages_total\{reason="slow_consumer"[^}]*\} (\d+)$/m.exec(
        await scrape(b),
      );
      assert.equal(inbox.received.length, count + 1, `dropped as slow: ${dropped?.[1] ?? 0}`);
    } finally {
      await end(subscriber, publisher);
    }
  });

  it("a retained message set through one node is delivered by the other", async () => {
    const publisher = await connect(a.urls.tcp as string);
    await publisher.publishAsync("xnode/retained", "kept", { qos: 1, retain: true });
    await end(publisher);
    const subscriber = await connect(b.urls.tcp as string);
    try {
      const inbox = new Inbox(subscriber);
      await subscribe(subscriber, "xnode/retained", 1);
      const [message] = await inbox.waitFor(1);
      assert.equal(message?.payload.toString(), "kept");
      assert.equal(message?.packet.retain, true);
    } finally {
      await end(subscriber);
    }
  });

  it("a persistent session resumes on the other node with the messages queued meanwhile", async () => {
    const first = await connect(a.urls.tcp as string, { clientId: "roaming-plc", clean: false });
    await subscribe(first, "xnode/cmd", 1);
    await first.endAsync();
    const sender = await connect(a.urls.tcp as string);
    await sender.publishAsync("xnode/cmd", "open valve", { qos: 1 });
    await end(sender);
    const {
      client: resumed,
      inbox,
      sessionPresent,
    } = await connectWithConnack(b.urls.tcp as string, { clientId: "roaming-plc", clean: false });
    try {
      assert.equal(sessionPresent, true);
      const [message] = await inbox.waitFor(1);
      assert.equal(message?.payload.toString(), "open valve");
    } finally {
      await end(resumed);
    }
  });

  it("a stored session without subscriptions is reported present on the other node [MQTT-3.2.2-2]", async () => {
    const present = async (url: string) => {
      const { client, sessionPresent } = await connectWithConnack(url, {
        clientId: "bare-session",
        clean: false,
      });
      await end(client);
      return sessionPresent;
    };
    assert.equal(await present(a.urls.tcp as string), false);
    assert.equal(await present(b.urls.tcp as string), true);
  });

  it("a client id connected on one node is taken over by a connection on the other", async () => {
    const first = await connect(a.urls.tcp as string, { clientId: "moving-rtu" });
    const closed = new Promise<void>((resolve) => first.once("close", () => resolve()));
    const second = await connect(b.urls.tcp as string, { clientId: "moving-rtu" });
    try {
      await closed;
      assert.equal(second.connected, true);
    } finally {
      await end(first, second);
    }
  });

  it("sluice_cluster_nodes counts both nodes on each node once they have heard each other", async () => {
    const nodes = async (node: RunningNode) =>
      Number(/^sluice_cluster_nodes\{[^}]*\} (\d+)$/m.exec(await scrape(node))?.[1]);
    // Nodes announce themselves every 5 s; poll the scrape, bounded well past one interval.
    let counts = [await nodes(a), await nodes(b)];
    for (let i = 0; counts.some((c) => c !== 2) && i < 60; i++) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      counts = [await nodes(a), await nodes(b)];
    }
    assert.deepEqual(counts, [2, 2]);
  });

  it("exposes sluice_redis_up 1 on a node using Redis", async () => {
    assert.match(await scrape(a), /^sluice_redis_up\{node="node-a"\} 1$/m);
  });
});

describe("subscription cache across restarts and session moves", () => {
  it("a # subscriber on a restarted node gets everything once, and keeps doing so as its session moves", async () => {
    const cachePrefix = `${prefix}cache:`;
    const node = (nodeId: string) =>
      startNode({ nodeId, redis: { url: redis.url, keyPrefix: cachePrefix } });
    const one = await node("cache-1");
    let two = await node("cache-2");
    const publisher = await connect(one.urls.tcp as string);
    let historian: Awaited<ReturnType<typeof connectWithConnack>> | undefined;
    /** Publishes `count` messages and a marker, and checks the historian got each exactly once. */
    const expectOnce = async (label: string, count: number, from = publisher) => {
      const inbox = historian?.inbox as Inbox;
      const before = inbox.received.length;
      for (let i = 0; i < count; i++)
        await from.publishAsync(`plant/${label}/${i}`, "v", { qos: 1 });
      await from.publishAsync(`plant/${label}/end`, "end", { qos: 1 });
      const got = (await inbox.waitFor(before + count + 1)).slice(before);
      assert.equal(new Set(got.map((m) => m.topic)).size, count + 1, `${label}: no duplicates`);
      assert.equal(
        got.at(-1)?.topic,
        `plant/${label}/end`,
        `${label}: nothing extra before the marker`,
      );
    };
    try {
      const first = await connect(one.urls.tcp as string, { clientId: "historian", clean: false });
      await subscribe(first, "#", 1);
      await end(first);
      // The node that will serve the subscriber restarts: its cache is rebuilt from Redis.
      await two.stop();
      two = await node("cache-2");
      historian = await connectWithConnack(two.urls.tcp as string, {
        clientId: "historian",
        clean: false,
      });
      assert.equal(historian.sessionPresent, true);
      await expectOnce("after-restart", 20);
      // The session moves back to node one; what is published meanwhile is queued once.
      await end(historian.client);
      const other = await connect(two.urls.tcp as string);
      for (let i = 0; i < 10; i++) await other.publishAsync(`plant/offline/${i}`, "q", { qos: 1 });
      historian = await connectWithConnack(one.urls.tcp as string, {
        clientId: "historian",
        clean: false,
      });
      const queued = await historian.inbox.waitFor(10);
      assert.equal(new Set(queued.map((m) => m.topic)).size, 10, "queued messages once each");
      await expectOnce("after-move", 20, other);
      await end(other);
    } finally {
      await end(publisher, historian?.client);
      await one.stop();
      await two.stop();
    }
  });
});

describe("cluster-wide brute-force lockout", () => {
  it("failures on one node lock the username at that address, then the address, on the other; sessions stay with their owner", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sluice-lockout-"));
    await writeFile(
      join(dir, "passwd"),
      `op:${await hashPassword("right")}\neve:${await hashPassword("eve")}\n`,
    );
    const secured = (nodeId: string) =>
      startNode(
        {
          nodeId,
          redis: { url: redis.url, keyPrefix: `${prefix}lock:` },
          auth: { allowAnonymous: false, passwordFile: "passwd" },
          limits: { authFailures: { perIp: 3, perUsername: 2, blockSeconds: 60 } },
        },
        dir,
      );
    const [one, two] = [await secured("lock-1"), await secured("lock-2")];
    try {
      const code = async (
        node: RunningNode,
        password: string,
        { username = "op", fromAddress = "127.0.0.7" } = {},
      ) =>
        connect(node.urls.tcp as string, { username, password, fromAddress }).then(
          async (client) => {
            await end(client);
            return 0;
          },
          (error: { code?: number }) => Number(error.code),
        );
      // Another identity may not resume a stored session made through the other node.
      const session = await connect(one.urls.tcp as string, {
        clientId: "op-plc",
        clean: false,
        username: "op",
        password: "right",
      });
      await end(session);
      const stolen = await connect(two.urls.tcp as string, {
        clientId: "op-plc",
        clean: false,
        username: "eve",
        password: "eve",
      }).then(
        () => 0,
        (error: { code?: number }) => Number(error.code),
      );
      assert.equal(stolen, 5);
      assert.match(
        await scrape(two),
        /sluice_auth_failures_total\{reason="session_owned_by_other",node="lock-2"\} 1/,
      );
      for (let i = 0; i < 2; i++) assert.equal(await code(one, "wrong"), 4);
      assert.equal(await code(two, "right"), 5, "op locked out at that address on the other node");
      assert.equal(await code(two, "right", { fromAddress: "127.0.0.8" }), 0, "op elsewhere");
      assert.equal(await code(one, "wrong", { username: "eve" }), 4);
      assert.equal(await code(two, "eve", { username: "eve" }), 5, "the address is locked now");
      assert.match(
        await scrape(two),
        /sluice_auth_failures_total\{reason="locked_out",node="lock-2"\} 2/,
      );
    } finally {
      await one.stop();
      await two.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("Redis over TLS with an ACL user", () => {
  it("nodes reach a TLS-only Redis with a client certificate, a private CA and a password", async () => {
    const pki = await createTestPki();
    const secure = await RedisServer.start({
      tls: { cert: pki.serverCert, key: pki.serverKey, ca: pki.caCert },
      // redis-server joins the words after a directive into its config line.
      args: ["--user", "sluice", "on", ">s3cret", "~*", "&*", "+@all", "--user", "default", "off"],
    });
    const node = (nodeId: string) =>
      startNode({
        nodeId,
        redis: {
          url: `rediss://sluice:s3cret@127.0.0.1:${secure.port}`,
          tls: { ca: pki.caCert, cert: pki.clientCert, key: pki.clientKey },
          keyPrefix: `${prefix}tls:`,
        },
      });
    const [one, two] = [await node("tls-1"), await node("tls-2")];
    try {
      const subscriber = await connect(two.urls.tcp as string);
      const publisher = await connect(one.urls.tcp as string);
      const inbox = new Inbox(subscriber);
      await subscribe(subscriber, "tls/#", 1);
      await publisher.publishAsync("tls/1", "over tls", { qos: 1 });
      const [message] = await inbox.waitFor(1);
      assert.equal(message?.payload.toString(), "over tls");
      await end(subscriber, publisher);
      assert.match(await scrape(one), /^sluice_redis_up\{node="tls-1"\} 1$/m);
    } finally {
      await one.stop();
      await two.stop();
      await secure.stop();
      await pki.cleanup();
    }
  });
});

describe("node ids", () => {
  it("a second live node with an id already held is refused at start", async () => {
    await assert.rejects(
      startNode({
        nodeId: "node-a",
        redis: { url: redis.url, keyPrefix: prefix, nodeLeaseSeconds: 1 },
      }),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.match(error.problems.join("\n"), /another live node holds the id node-a/);
        return true;
      },
    );
    assert.equal((await fetch(`${a.httpUrl}/readyz`)).status, 200, "the holder is unaffected");
  });

  it("a node restarted after SIGKILL gets its id back once the dead node's lease runs out", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sluice-lease-"));
    const file = join(dir, "node.yaml");
    await writeFile(
      file,
      `nodeId: phoenix\nlisteners: [{ type: tcp, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: 0 }\n` +
        `auth: { allowAnonymous: true }\nredis: { url: "${redis.url}", keyPrefix: "${prefix}", nodeLeaseSeconds: 2 }\n`,
    );
    const first = SluiceProcess.spawn(["start", "--config", file]);
    let second: SluiceProcess | undefined;
    try {
      await first.ready();
      first.kill("SIGKILL");
      await first.exited;
      second = SluiceProcess.spawn(["start", "--config", file]);
      await second.ready();
      assert.ok(second.lines.some((l) => l.event === "node.ready"));
    } finally {
      first.kill();
      second?.kill("SIGTERM");
      await second?.exited;
      await rm(dir, { recursive: true, force: true });
    }
  });
});

/** A node process (anonymous access, one TCP listener) using `redis`, its config in a temp folder. */
async function spawnNodeOn(redis: RedisServer): Promise<{ dir: string; node: SluiceProcess }> {
  const dir = await mkdtemp(join(tmpdir(), "sluice-redis-node-"));
  const file = join(dir, "node.yaml");
  await writeFile(
    file,
    `listeners: [{ type: tcp, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: 0 }\n` +
      `auth: { allowAnonymous: true }\nlog: { level: debug, format: json }\nredis: { url: "${redis.url}" }\n`,
  );
  return { dir, node: SluiceProcess.spawn(["start", "--config", file]) };
}

describe("Redis outage", () => {
  it("a node process survives failed reconnects while Redis is down, and recovers", async () => {
    const own = await RedisServer.start();
    const { dir, node } = await spawnNodeOn(own);
    try {
      const { ports } = await node.ready();
      await own.kill();
      const down = await node.waitForEvent("redis.down");
      // A reconnect attempt that failed and was handled (it used to throw from mqemitter-redis).
      await node.waitForEvent("redis.emitter_error");
      assert.equal(node.child.exitCode, null, "still running");
      // A client arriving now is told to come back later; the outage is no hook failure.
      const refused = await connect(`mqtt://127.0.0.1:${ports.tcp}`, {
        clientId: "mid-outage",
      }).then(
        async (client) => {
          await end(client);
          return 0;
        },
        (error: { code?: number }) => Number(error.code),
      );
      assert.equal(refused, 3, "CONNACK 3: server unavailable");
      assert.equal(
        node.lines.filter((l) => l.event === "hook.failed").length,
        0,
        "an outage is logged once as redis.down, not as a failure per CONNECT",
      );
      await own.start();
      await node.waitForLog(
        (l) => l.event === "redis.up" && node.lines.indexOf(l) > node.lines.indexOf(down),
      );
      node.kill("SIGTERM");
      assert.equal((await node.exited).code, 0);
    } finally {
      node.kill();
      await own.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a node started while Redis is down waits with its probes up, and becomes ready with Redis", async () => {
    const own = await RedisServer.start();
    await own.stop();
    const { dir, node } = await spawnNodeOn(own);
    try {
      await node.waitForEvent("redis.waiting");
      const httpPort = Number((await node.waitForEvent("http.started")).port);
      const probe = (path: string) =>
        fetch(`http://127.0.0.1:${httpPort}${path}`).then((r) => r.status);
      assert.equal(await probe("/healthz"), 200);
      assert.equal(await probe("/readyz"), 503);
      assert.equal(node.child.exitCode, null, "still running");
      await own.start();
      const { ports } = await node.ready();
      assert.equal(await probe("/readyz"), 200);
      const client = await connect(`mqtt://127.0.0.1:${ports.tcp}`);
      await end(client);
      node.kill("SIGTERM");
      assert.equal((await node.exited).code, 0);
    } finally {
      node.kill();
      await own.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("the node stays up, turns not-ready with sluice_redis_up 0, and recovers when Redis returns", async () => {
    const readyz = () => fetch(`${a.httpUrl}/readyz`).then((r) => r.status);
    const healthz = () => fetch(`${a.httpUrl}/healthz`).then((r) => r.status);
    assert.equal(await readyz(), 200);
    await redis.kill();
    // Bounded polling of the probe: the node notices the lost connections on its own schedule.
    let status = await readyz();
    for (let i = 0; status === 200 && i < 200; i++) {
      await new Promise((resolve) => setTimeout(resolve, 25));
      status = await readyz();
    }
    assert.equal(status, 503);
    assert.equal(await healthz(), 200, "the process still serves");
    assert.match(await scrape(a), /^sluice_redis_up\{node="node-a"\} 0$/m);
    await redis.start();
    for (let i = 0; status !== 200 && i < 400; i++) {
      await new Promise((resolve) => setTimeout(resolve, 25));
      status = await readyz();
    }
    assert.equal(status, 200, "ready again without a restart");
    assert.match(await scrape(a), /^sluice_redis_up\{node="node-a"\} 1$/m);
  });
});
