import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { createTestPki, secureListener, type TestPki } from "../../harness/certs.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, end, type MqttClient } from "../../harness/mqtt-client.js";
import { proxyV1 } from "../../harness/proxy-protocol.js";
import { closedByPeer, rawConnect } from "../../harness/raw-socket.js";
import { RedisServer } from "../../harness/redis-server.js";
import { hashPassword } from "../../src/security/password-hash.js";

/**
 * Admission: quotas checked when a socket is accepted (on plain TCP its CONNECT is only read to
 * answer CONNACK 3, bounded; over TLS closed before the handshake) and on CONNECT (answered
 * CONNACK 3), each refusal counted by reason.
 */
let dir: string;
let redis: RedisServer;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-admission-"));
  await writeFile(
    join(dir, "passwd"),
    `op:${await hashPassword("op-pw")}\nscada:${await hashPassword("scada-pw")}\n`,
  );
  redis = await RedisServer.start();
});
after(async () => {
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** Connects and resolves with 0 when accepted, the CONNACK code when refused, -1 when closed. */
async function attempt(
  node: RunningNode,
  options: Parameters<typeof connect>[1] = {},
): Promise<{ code: number; client?: MqttClient }> {
  return connect(node.urls.tcp as string, { connectTimeout: 5_000, ...options }).then(
    (client) => ({ code: 0, client }),
    (error: { code?: number }) => ({ code: error.code ?? -1 }),
  );
}

async function rejected(node: RunningNode, reason: string): Promise<number> {
  const metrics = await fetch(`${node.httpUrl}/metrics`).then((r) => r.text());
  const line = new RegExp(
    `^sluice_connections_rejected_total\\{reason="${reason}",[^}]*\\} (\\d+)`,
    "m",
  );
  return Number(line.exec(metrics)?.[1] ?? 0);
}

/** Waits (bounded) until the node counts no open connection: the server saw every close. */
async function drained(node: RunningNode): Promise<void> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const metrics = await fetch(`${node.httpUrl}/metrics`).then((r) => r.text());
    const open = [...metrics.matchAll(/^sluice_connections\{[^}]*\} (\d+)$/gm)].reduce(
      (sum, m) => sum + Number(m[1]),
      0,
    );
    if (open === 0) return;
    assert.ok(Date.now() < deadline, `connections still open: ${open}`);
  }
}

describe("socket quotas", () => {
  it("a flood from one address hits its cap while another address connects normally", async () => {
    const node = await startNode({ limits: { connections: { perIp: 5 } } });
    const kept: MqttClient[] = [];
    try {
      const outcomes = [];
      for (let i = 0; i < 12; i++) {
        const result = await attempt(node, { fromAddress: "127.0.0.1" });
        if (result.client) kept.push(result.client);
        outcomes.push(result.code);
      }
      assert.equal(outcomes.filter((code) => code === 0).length, 5);
      assert.ok(
        outcomes.slice(5).every((code) => code === 3),
        "refused with CONNACK 3, before any authentication",
      );
      const other = await attempt(node, { fromAddress: "127.0.0.2" });
      assert.equal(other.code, 0, "another address is unaffected");
      kept.push(other.client as MqttClient);
      assert.equal(await rejected(node, "per_ip"), 7);
    } finally {
      await end(...kept);
      await node.stop();
    }
  });

  it("new connections per second from one address are capped", async () => {
    const node = await startNode({ limits: { connections: { ratePerIp: 4 } } });
    try {
      const codes = [];
      for (let i = 0; i < 10; i++) {
        const result = await attempt(node, { fromAddress: "127.0.0.3" });
        await end(result.client);
        codes.push(result.code);
      }
      // Ten connects take well under a second here; at most 4 fit in each second.
      const accepted = codes.filter((code) => code === 0).length;
      assert.ok(accepted >= 4 && accepted <= 8, `accepted ${accepted} of 10`);
      assert.equal(await rejected(node, "rate"), 10 - accepted);
      assert.equal((await attempt(node, { fromAddress: "127.0.0.4" })).code, 0);
    } finally {
      await node.stop();
    }
  });

  it("the node's own total is capped, and a closed connection frees its place", async () => {
    const node = await startNode({ limits: { connections: { perNode: 3 } } });
    const kept: MqttClient[] = [];
    try {
      for (let i = 0; i < 3; i++) kept.push((await attempt(node)).client as MqttClient);
      assert.equal((await attempt(node)).code, 3);
      assert.equal(await rejected(node, "per_node"), 1);
      await end(kept.pop());
      const deadline = Date.now() + 5_000;
      let again = await attempt(node);
      while (again.code !== 0 && Date.now() < deadline) again = await attempt(node);
      assert.equal(again.code, 0, "a place freed by a close is taken again");
      kept.push(again.client as MqttClient);
    } finally {
      await end(...kept);
      await node.stop();
    }
  });

  it("sockets that never send a CONNECT are closed at connectTimeoutMs and leave no trace", async () => {
    const node = await startNode({ limits: { connectTimeoutMs: 300 } });
    try {
      const port = Number(new URL(node.urls.tcp as string).port);
      const sockets = await Promise.all(Array.from({ length: 500 }, () => rawConnect(port)));
      const closings = sockets.map((socket) => closedByPeer(socket));
      const sent = await Promise.all(closings);
      assert.ok(
        sent.every((bytes) => bytes.length === 0),
        "closed without a byte sent",
      );
      await drained(node);
    } finally {
      await node.stop();
    }
  });
});

/**
 * Opens a TLS connection (after a PROXY header when `proxiedFrom` is given) and resolves with
 * whether its handshake completed; a completed one is closed again at once.
 */
function tlsAttempt(
  port: number,
  options: { fromAddress?: string; proxiedFrom?: string },
): Promise<"secure" | "refused"> {
  return new Promise((resolve) => {
    const raw = netConnect({ host: "127.0.0.1", port, localAddress: options.fromAddress });
    raw.on("error", () => {});
    if (options.proxiedFrom !== undefined) raw.write(proxyV1(options.proxiedFrom));
    const socket = tlsConnect({ socket: raw, rejectUnauthorized: false, servername: "localhost" });
    let secure = false;
    socket.once("secureConnect", () => {
      secure = true;
      // Ended, not destroyed: the server finishes its side of the handshake first.
      socket.end();
    });
    socket.on("error", () => {});
    socket.once("close", () => resolve(secure ? "secure" : "refused"));
  });
}

describe("socket quotas before the TLS handshake", () => {
  let pki: TestPki;
  before(async () => {
    pki = await createTestPki();
  });
  after(async () => {
    await pki?.cleanup();
  });

  const cases = [
    { name: "tls", listener: () => secureListener(pki, "tls"), proxied: false },
    { name: "wss", listener: () => secureListener(pki, "wss"), proxied: false },
    {
      name: "tls behind PROXY protocol",
      listener: () => ({
        ...secureListener(pki, "tls"),
        proxyProtocol: true,
        trustedProxies: ["127.0.0.1/32"],
      }),
      proxied: true,
    },
  ];
  for (const { name, listener, proxied } of cases) {
    it(`${name}: a flood over ratePerIp is refused before the handshake, but for the one answered refusal per address at a time; each refusal counted once`, async () => {
      const node = await startNode({
        listeners: [listener()],
        limits: { connections: { ratePerIp: 5 } },
      });
      try {
        const port = Number(node.node.addresses.listeners[0]?.address.port);
        const flood = 30;
        const outcomes = await Promise.all(
          Array.from({ length: flood }, () =>
            tlsAttempt(
              port,
              proxied ? { proxiedFrom: "203.0.113.9" } : { fromAddress: "127.0.0.5" },
            ),
          ),
        );
        const secure = outcomes.filter((o) => o === "secure").length;
        const answering = await refusalHandshakes(node);
        assert.ok(answering >= 1, "a refused socket is let through its handshake to be answered");
        // One place per address, taken again as each answered socket closes: the bounds' own
        // tests are in refusal-answers-transports.
        assert.ok(answering < flood - 5, `${answering} refused sockets handshook`);
        const admitted = secure - answering;
        // The flood takes well under a second; at most two one-second windows of 5.
        assert.ok(admitted >= 5 && admitted <= 10, `${admitted} of ${flood} admitted`);
        assert.equal(await rejected(node, "rate"), flood - admitted, "every refusal counted once");
        assert.equal(await rejected(node, "tls_handshake"), 0, "no refusal counted twice");
        await drained(node);
      } finally {
        await node.stop();
      }
    });
  }
});

/**
 * Refused sockets that went through their TLS handshake to be answered (outcome `answered` or
 * `unread`), once the outcome of every rate refusal is counted.
 */
async function refusalHandshakes(node: RunningNode): Promise<number> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const text = await fetch(`${node.httpUrl}/metrics`).then((r) => r.text());
    const count = (outcome: string) =>
      [
        ...text.matchAll(
          new RegExp(
            `^sluice_connection_refusal_answers_total\\{outcome="${outcome}",[^}]*\\} (\\d+)$`,
            "gm",
          ),
        ),
      ].reduce((sum, m) => sum + Number(m[1]), 0);
    const handshook = count("answered") + count("unread");
    if (handshook + count("dropped") === (await rejected(node, "rate"))) return handshook;
    assert.ok(Date.now() < deadline, "the refusals' outcomes were never all counted");
  }
}

describe("CONNECT quotas", () => {
  const secured = (limits: Record<string, unknown>, redisKeyPrefix?: string, nodeId?: string) =>
    startNode(
      {
        ...(nodeId ? { nodeId } : {}),
        auth: { allowAnonymous: false, passwordFile: "passwd" },
        limits,
        ...(redisKeyPrefix ? { redis: { url: redis.url, keyPrefix: redisKeyPrefix } } : {}),
      },
      dir,
    );

  it("a username's connections are capped across the cluster, with CONNACK 3", async () => {
    const prefix = `adm${randomBytes(3).toString("hex")}:`;
    const limits = { connections: { perUsername: 2 } };
    const a = await secured(limits, prefix, "adm-a");
    const b = await secured(limits, prefix, "adm-b");
    const op = (i: number) => ({ clientId: `op-${i}`, username: "op", password: "op-pw" });
    const kept: MqttClient[] = [];
    try {
      kept.push((await attempt(a, op(1))).client as MqttClient);
      kept.push((await attempt(b, op(2))).client as MqttClient);
      assert.equal((await attempt(a, op(3))).code, 3, "a third on either node is refused");
      assert.equal((await attempt(b, op(4))).code, 3);
      assert.equal(await rejected(b, "per_username"), 1);
      const scada = await attempt(a, {
        clientId: "scada-1",
        username: "scada",
        password: "scada-pw",
      });
      assert.equal(scada.code, 0, "another username is unaffected");
      kept.push(scada.client as MqttClient);
      // One of op's connections ends: its place is free again, on the other node too.
      await end(kept.shift());
      const deadline = Date.now() + 5_000;
      let again = await attempt(b, op(5));
      while (again.code !== 0 && Date.now() < deadline) again = await attempt(b, op(5));
      assert.equal(again.code, 0);
      kept.push(again.client as MqttClient);
    } finally {
      await end(...kept);
      await a.stop();
      await b.stop();
    }
  });

  it("a client id that reconnects in a loop is refused for a while (flapping), across nodes", async () => {
    const prefix = `flap${randomBytes(3).toString("hex")}:`;
    const limits = { flapping: { maxConnects: 3, windowSeconds: 60, banSeconds: 60 } };
    const a = await secured(limits, prefix, "flap-a");
    const b = await secured(limits, prefix, "flap-b");
    const device = { clientId: "looping-rtu", username: "op", password: "op-pw" };
    try {
      for (const node of [a, b, a]) {
        const result = await attempt(node, device);
        assert.equal(result.code, 0);
        await end(result.client);
      }
      assert.equal((await attempt(b, device)).code, 3, "the fourth connect in the window");
      assert.equal((await attempt(a, device)).code, 3, "still banned, on any node");
      assert.equal(await rejected(b, "flapping"), 1);
      assert.equal(await rejected(a, "banned"), 1);
      const other = await attempt(a, { ...device, clientId: "steady-rtu" });
      assert.equal(other.code, 0, "another client id is unaffected");
      await end(other.client);
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  it("an overloaded node refuses new clients with CONNACK 3 and /readyz 503, then recovers", async () => {
    const node = await startNode({
      limits: { overload: { eventLoopDelayMs: 150, recoverMs: 300 } },
    });
    const readyz = () => fetch(`${node.httpUrl}/readyz`).then((r) => r.status);
    const established = (await attempt(node)).client as MqttClient;
    try {
      assert.equal(await readyz(), 200);
      // A synthetic stall of this process' event loop, which the node shares.
      const until = Date.now() + 400;
      while (Date.now() < until) {
        // busy
      }
      const deadline = Date.now() + 5_000;
      while ((await readyz()) !== 503) assert.ok(Date.now() < deadline, "never overloaded");
      assert.equal((await attempt(node)).code, 3);
      assert.equal(await rejected(node, "overload"), 1);
      assert.equal(established.connected, true, "established sessions keep working");
      await established.publishAsync("overload/still", "works", { qos: 1 });
      while ((await readyz()) !== 200) assert.ok(Date.now() < deadline, "never recovered");
      const after = await attempt(node);
      assert.equal(after.code, 0);
      await end(after.client);
    } finally {
      await end(established);
      await node.stop();
    }
  });
});
