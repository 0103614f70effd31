import assert from "node:assert/strict";
import { connect as netConnect, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { connect as tlsConnect } from "node:tls";
import type { IClientOptions } from "mqtt";
import { createTestPki, secureListener, type TestPki } from "../../harness/certs.js";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, end, type MqttClient } from "../../harness/mqtt-client.js";
import { closedByPeer } from "../../harness/raw-socket.js";
import {
  connackOver,
  type Dial,
  labelledMetric,
  mosquittoSub,
} from "../../harness/refusal-clients.js";

/**
 * Issue 15: refusals on `tls`, `ws` and `wss` listeners are answered too, after the handshake
 * or the upgrade (for WebSocket in a binary frame), from a budget of their own: 16 at once, 1
 * per address, 20 a second.
 */
const V5: IClientOptions = { protocolVersion: 5 };
const V4: IClientOptions = { protocolVersion: 4 };
const HANDSHAKE_TRANSPORTS = ["tls", "ws", "wss"] as const;

let pki: TestPki;
before(async () => {
  pki = await createTestPki();
});
after(() => pki.cleanup());

/** A node with one listener of every type, whose one place (`perNode: 1`) `hold()` takes. */
function allListeners(): Record<string, unknown>[] {
  return [
    { type: "tcp", host: "127.0.0.1", port: 0 },
    secureListener(pki, "tls"),
    { type: "ws", host: "127.0.0.1", port: 0, path: "/mqtt" },
    { ...secureListener(pki, "wss"), path: "/mqtt" },
  ];
}

function dialOf(node: RunningNode, transport: keyof RunningNode["urls"], from: string): Dial {
  return { url: node.urls[transport] as string, fromAddress: from, ca: pki.read(pki.caCert) };
}

function portOf(node: RunningNode, transport: keyof RunningNode["urls"]): number {
  return Number(new URL(node.urls[transport] as string).port);
}

function answers(node: RunningNode, outcome: string, transport: string): Promise<number> {
  return labelledMetric(
    node.httpUrl,
    "sluice_connection_refusal_answers_total",
    `outcome="${outcome}",transport="${transport}"`,
  );
}

function readyz(node: RunningNode): Promise<number> {
  return fetch(`${node.httpUrl}/readyz`).then((r) => r.status);
}

/** A TLS connection refused by the node: resolves with whether a CONNACK came before the close. */
function refusedTls(node: RunningNode, from: string, connect5: Buffer): Promise<boolean> {
  return new Promise((resolve) => {
    // localAddress is a net option tls.connect passes on (not in its types).
    const at = { host: "127.0.0.1", port: portOf(node, "tls"), localAddress: from };
    const socket = tlsConnect({ ...at, ca: pki.read(pki.caCert), servername: "localhost" });
    let answered = false;
    socket.on("error", () => {});
    socket.once("secureConnect", () => socket.write(connect5));
    socket.on("data", (chunk: Buffer) => {
      if (chunk[0] === 0x20) answered = true;
    });
    socket.once("close", () => resolve(answered));
  });
}

/** An MQTT 5 CONNECT (clean start, keep-alive 60, no properties) for client id `id`. */
function connect5(id: string): Buffer {
  const clientId = Buffer.from(id, "utf8");
  const variable = Buffer.from([0, 4, 0x4d, 0x51, 0x54, 0x54, 5, 0x02, 0, 60, 0]);
  const length = variable.length + 2 + clientId.length;
  return Buffer.concat([
    Buffer.from([0x10, length]),
    variable,
    Buffer.from([0, clientId.length]),
    clientId,
  ]);
}

describe("socket quotas answered over tls, ws and wss", () => {
  it("per node: MQTT.js v5 0x97 with its reason string and v3.1.1 3 after the TLS handshake and in a WebSocket frame; mosquitto_sub over TLS 151 and 3", async () => {
    const node = await startNode({
      listeners: allListeners(),
      limits: { connections: { perNode: 1 } },
    });
    let held: MqttClient | undefined;
    try {
      held = await connect(node.urls.tcp as string);
      let host = 1;
      for (const transport of HANDSHAKE_TRANSPORTS) {
        const v5 = await connackOver(dialOf(node, transport, `127.0.11.${host++}`), {
          ...V5,
          clientId: `refused-5-${transport}`,
        });
        assert.ok(v5 !== "closed", `${transport}: a CONNACK`);
        assert.equal(v5.reasonCode, 0x97, transport);
        assert.equal(v5.properties?.reasonString, "quota exceeded", transport);
        const v4 = await connackOver(dialOf(node, transport, `127.0.11.${host++}`), {
          ...V4,
          clientId: `refused-4-${transport}`,
        });
        assert.ok(v4 !== "closed", `${transport}: a CONNACK`);
        assert.equal(v4.returnCode, 3, transport);
      }
      const overTls = ["--cafile", pki.caCert];
      const port = portOf(node, "tls");
      const mosquitto5 = await mosquittoSub(port, "127.0.11.20", "mqttv5", overTls);
      assert.match(mosquitto5.output, /received CONNACK \(151\)/);
      assert.notEqual(mosquitto5.code, 0);
      const mosquitto4 = await mosquittoSub(port, "127.0.11.21", "mqttv311", overTls);
      assert.match(mosquitto4.output, /received CONNACK \(3\)/);
      assert.equal(await answers(node, "answered", "tls"), 4);
      assert.equal(await answers(node, "answered", "ws"), 2);
      assert.equal(await answers(node, "answered", "wss"), 2);
      assert.equal(
        await labelledMetric(
          node.httpUrl,
          "sluice_connections_rejected_total",
          'reason="per_node"',
        ),
        8,
        "each refusal counted once, under its quota (not also as a handshake failure)",
      );
    } finally {
      await end(held);
      await node.stop();
    }
  });

  it("ws from a trusted proxy: admitted at the upgrade request, refused there, answered in a frame", async () => {
    const node = await startNode({
      listeners: [
        { type: "ws", host: "127.0.0.1", port: 0, path: "/mqtt", trustedProxies: ["127.0.0.1/32"] },
      ],
      limits: { connections: { perNode: 1 } },
    });
    let held: MqttClient | undefined;
    try {
      held = await connect(node.urls.ws as string);
      const v5 = await connackOver(dialOf(node, "ws", "127.0.0.1"), {
        ...V5,
        clientId: "behind-proxy",
      });
      assert.ok(v5 !== "closed");
      assert.equal(v5.reasonCode, 0x97);
    } finally {
      await end(held);
      await node.stop();
    }
  });
});

describe("the handshake answers' bounds", () => {
  it("silent sockets on tls take 1 place per address and 16 on the node; past them, dropped before the handshake; the node stays ready", async () => {
    const node = await startNode({
      listeners: [{ type: "tcp", host: "127.0.0.1", port: 0 }, secureListener(pki, "tls")],
      limits: { connectTimeoutMs: 1_500, connections: { perNode: 1 } },
    });
    const held = await connect(node.urls.tcp as string);
    const silent: Socket[] = [];
    const dialTcp = (from: string) =>
      new Promise<Socket>((resolve, reject) => {
        const socket = netConnect({
          host: "127.0.0.1",
          port: portOf(node, "tls"),
          localAddress: from,
        });
        socket.on("error", () => {});
        socket.once("connect", () => resolve(socket));
        socket.once("error", reject);
      });
    try {
      // Raw TCP without a ClientHello: each holds a place until the deadline.
      silent.push(await dialTcp("127.0.12.1"));
      const second = await dialTcp("127.0.12.1");
      assert.equal(
        (await withDeadline(closedByPeer(second), 5_000, "second from one address")).length,
        0,
      );
      for (let i = 2; i <= 16; i++) silent.push(await dialTcp(`127.0.12.${i}`));
      const seventeenth = await dialTcp("127.0.12.17");
      await withDeadline(closedByPeer(seventeenth), 5_000, "the 17th closed");
      const deadline = Date.now() + 5_000;
      while ((await answers(node, "dropped", "tls")) < 2) {
        assert.ok(Date.now() < deadline, "the two drops were never counted");
      }
      assert.equal(await answers(node, "dropped", "tls"), 2);
      assert.equal(await readyz(node), 200);
      const closed = silent.map((socket) => closedByPeer(socket));
      await withDeadline(Promise.all(closed), 5_000, "silent sockets closed at the deadline");
      assert.ok(
        await refusedTls(node, "127.0.12.17", connect5("after-the-deadline")),
        "answered again once places are free",
      );
    } finally {
      for (const socket of silent) socket.destroy();
      await end(held);
      await node.stop();
    }
  });

  it("a TLS connect flood (300 refusals, 16 at once from 16 addresses) is answered at most 20 a second, the rest dropped before the handshake; /readyz stays 200; a client is taken after", async () => {
    const node = await startNode({
      listeners: [{ type: "tcp", host: "127.0.0.1", port: 0 }, secureListener(pki, "tls")],
      limits: { connections: { perNode: 1 } },
    });
    let held: MqttClient | undefined = await connect(node.urls.tcp as string);
    try {
      const total = 300;
      let next = 0;
      let answered = 0;
      let dropped = 0;
      let flooding = true;
      const probes: number[] = [];
      const probing = (async () => {
        while (flooding) probes.push(await readyz(node));
      })();
      const started = Date.now();
      const worker = async (w: number): Promise<void> => {
        while (next < total) {
          const i = next++;
          if (await refusedTls(node, `127.0.13.${w + 1}`, connect5(`flood-${i}`))) answered++;
          else dropped++;
        }
      };
      await withDeadline(
        Promise.all(Array.from({ length: 16 }, (_, w) => worker(w))),
        60_000,
        "the flood",
      ).finally(() => {
        flooding = false;
      });
      await probing;
      const windows = Math.floor((Date.now() - started) / 1_000) + 1;
      assert.equal(answered + dropped, total);
      assert.ok(answered <= 20 * windows, `${answered} answered in at most ${windows} windows`);
      assert.ok(answered > 0, "some answered");
      assert.ok(dropped > 0, "some dropped");
      assert.equal(await answers(node, "answered", "tls"), answered);
      assert.ok(probes.length > 0 && probes.every((status) => status === 200), `${probes}`);
      await end(held);
      held = undefined;
      const deadline = Date.now() + 5_000;
      let taken = await connect(node.urls.tls as string, { ca: pki.read(pki.caCert) }).catch(
        () => undefined,
      );
      while (taken === undefined && Date.now() < deadline) {
        taken = await connect(node.urls.tls as string, { ca: pki.read(pki.caCert) }).catch(
          () => undefined,
        );
      }
      assert.ok(taken, "a TLS client is taken once the place is free");
      await end(taken);
    } finally {
      await end(held);
      await node.stop();
    }
  });
});
