import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { IClientOptions } from "mqtt";
import { createTestPki, secureListener, type TestPki } from "../../harness/certs.js";
import { HaProxy } from "../../harness/haproxy.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { LogCapture } from "../../harness/log-capture.js";
import { connect, end, type MqttClient } from "../../harness/mqtt-client.js";
import { proxyV1, proxyV2 } from "../../harness/proxy-protocol.js";
import { ProxyRelay } from "../../harness/proxy-relay.js";
import { closedByPeer, connectPacket, rawConnect, readBytes } from "../../harness/raw-socket.js";
import type { LogLine } from "../../harness/sluice-process.js";
import { hashPassword } from "../../src/security/password-hash.js";

/**
 * Behind a load balancer every connection comes from the balancer: the client's own address,
 * which per-IP limits, lockouts and the audit log key on, must come from the PROXY protocol
 * header (tcp, tls) or X-Forwarded-For (ws, wss), and only when a trusted proxy sends it.
 */

const CONNECT_TIMEOUT_MS = 600;
const TRUSTED = ["127.0.0.1/32"];

let dir: string;
let pki: TestPki;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-proxy-"));
  pki = await createTestPki({ clientCn: "pump-7" });
  await writeFile(join(dir, "passwd"), `device:${await hashPassword("pw")}\n`);
});
after(async () => {
  await pki.cleanup();
  await rm(dir, { recursive: true, force: true });
});

let sequence = 0;
const unique = (prefix: string): string => `${prefix}-${process.pid}-${++sequence}`;

async function metric(node: RunningNode, series: string): Promise<number> {
  const text = await fetch(`${node.httpUrl}/metrics`).then((r) => r.text());
  const line = text.split("\n").find((l) => l.startsWith(series));
  return line ? Number(line.split(" ").pop()) : 0;
}

const rejected = (reason: string): string => `sluice_connections_rejected_total{reason="${reason}"`;

/** CONNACK return code of a refused connection. */
async function refusal(attempt: Promise<MqttClient>): Promise<number> {
  try {
    const client = await attempt;
    await end(client);
  } catch (error) {
    return Number((error as { code?: number }).code);
  }
  assert.fail("the connection was accepted");
}

/** The audit line of a client's successful authentication. */
const authSucceeded =
  (clientId: string) =>
  (line: LogLine): boolean =>
    line.event === "audit.auth_succeeded" && line.clientId === clientId;

/** Connects through a relay that opens the connection with `header`; closes the relay after. */
async function throughRelay<T>(
  node: RunningNode,
  type: "tcp" | "tls",
  relay: { header: Buffer; localAddress?: string },
  body: (url: string) => Promise<T>,
): Promise<T> {
  const targetPort = Number(new URL(node.urls[type] as string).port);
  const proxy = await ProxyRelay.start({ targetPort, ...relay });
  try {
    return await body(`${type === "tls" ? "mqtts" : "mqtt"}://127.0.0.1:${proxy.port}`);
  } finally {
    await proxy.stop();
  }
}

describe("PROXY protocol on a tcp listener", () => {
  let node: RunningNode;
  let logs: LogCapture;
  before(async () => {
    logs = new LogCapture();
    node = await startNode(
      {
        listeners: [
          { type: "tcp", host: "127.0.0.1", port: 0, proxyProtocol: true, trustedProxies: TRUSTED },
        ],
        auth: { allowAnonymous: false, passwordFile: "passwd" },
        limits: {
          connectTimeoutMs: CONNECT_TIMEOUT_MS,
          authFailures: { perIp: 2, perUsername: 100, blockSeconds: 60 },
        },
      },
      dir,
      { logger: logs.logger },
    );
  });
  after(async () => {
    await node.stop();
  });

  const device = (clientId: string): IClientOptions => ({
    clientId,
    username: "device",
    password: "pw",
  });

  for (const [name, header, address] of [
    ["v2 over IPv4", proxyV2({ source: "198.51.100.7" }), "198.51.100.7"],
    ["v2 over IPv6", proxyV2({ source: "2001:db8::7" }), "2001:db8::7"],
    ["v1", proxyV1("203.0.113.5"), "203.0.113.5"],
  ] as const) {
    it(`${name} from a trusted proxy: the node sees the client's address`, async () => {
      const clientId = unique("proxied");
      await throughRelay(node, "tcp", { header }, async (url) => {
        const client = await connect(url, device(clientId));
        await end(client);
      });
      const audit = await logs.waitFor(authSucceeded(clientId));
      assert.equal(audit.remoteAddress, address);
      const connected = await logs.waitFor(
        (l) => l.event === "client.connected" && l.clientId === clientId,
      );
      assert.equal(connected.remoteAddress, address);
      assert.equal(connected.proxyAddress, "127.0.0.1", "the proxy stays known for the logs");
    });
  }

  for (const [name, header] of [
    ["v2 LOCAL (a health check)", proxyV2({ local: true })],
    ["v1 UNKNOWN", Buffer.from("PROXY UNKNOWN\r\n")],
  ] as const) {
    it(`${name}: the connection is the proxy's own`, async () => {
      const clientId = unique("local");
      await throughRelay(node, "tcp", { header }, async (url) => {
        const client = await connect(url, device(clientId));
        await end(client);
      });
      const audit = await logs.waitFor(authSucceeded(clientId));
      assert.equal(audit.remoteAddress, "127.0.0.1");
    });
  }

  it("the per-IP lockout locks the decoded address, not the proxy's", async () => {
    const attacker = proxyV2({ source: "198.51.100.66" });
    await throughRelay(node, "tcp", { header: attacker }, async (url) => {
      for (let i = 0; i < 2; i++) {
        const guess = { ...device(unique("guess")), password: `wrong-${i}` };
        assert.equal(await refusal(connect(url, guess)), 4, "bad user name or password");
      }
      // Locked out now, even with the right password...
      assert.equal(await refusal(connect(url, device(unique("locked")))), 5);
    });
    // ...while another client behind the same proxy still gets in.
    const neighbour = proxyV2({ source: "198.51.100.67" });
    await throughRelay(node, "tcp", { header: neighbour }, async (url) => {
      const client = await connect(url, device(unique("neighbour")));
      assert.equal(client.connected, true);
      await end(client);
    });
  });

  it("a header from a peer outside trustedProxies is refused and counted", async () => {
    const before = await metric(node, rejected("proxy_untrusted"));
    await throughRelay(
      node,
      "tcp",
      { header: proxyV2({ source: "198.51.100.7" }), localAddress: "127.0.0.2" },
      async (url) => {
        await assert.rejects(connect(url, device(unique("untrusted"))));
      },
    );
    assert.equal(await metric(node, rejected("proxy_untrusted")), before + 1);
  });

  it("a trusted peer without a header, or with garbage, is refused as invalid", async () => {
    const before = await metric(node, rejected("proxy_header_invalid"));
    // A plain MQTT client: the listener never guesses whether a header is there.
    await assert.rejects(connect(node.urls.tcp as string, device(unique("bare"))));
    const port = Number(new URL(node.urls.tcp as string).port);
    const socket = await rawConnect(port);
    socket.write(Buffer.from("PROXY TCP4 198.51.100.7 not-an-address 1 2\r\n"));
    await closedByPeer(socket);
    // A v2 header announcing 64 KiB is refused as soon as its length is read.
    const oversized = await rawConnect(port);
    oversized.write(Buffer.concat([proxyV2().subarray(0, 14), Buffer.from([0xff, 0xff])]));
    await closedByPeer(oversized);
    assert.equal(await metric(node, rejected("proxy_header_invalid")), before + 3);
  });

  it("a partial header that stalls is closed at connectTimeoutMs", async () => {
    const before = await metric(node, rejected("proxy_header_timeout"));
    const port = Number(new URL(node.urls.tcp as string).port);
    const socket = await rawConnect(port);
    const started = Date.now();
    socket.write(proxyV2().subarray(0, 20));
    await closedByPeer(socket);
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= CONNECT_TIMEOUT_MS - 50, `closed after ${elapsed} ms`);
    assert.ok(elapsed < CONNECT_TIMEOUT_MS + 2_000, `closed after ${elapsed} ms`);
    assert.equal(await metric(node, rejected("proxy_header_timeout")), before + 1);
  });

  it("MQTT bytes in the header's own packet reach the broker", async () => {
    const port = Number(new URL(node.urls.tcp as string).port);
    const socket = await rawConnect(port);
    try {
      // Header and CONNECT in one write: the broker must not lose what follows the header.
      socket.write(Buffer.concat([proxyV1("198.51.100.8"), connectPacket(unique("raw"))]));
      const connack = await readBytes(socket, 4);
      assert.deepEqual([...connack], [0x20, 0x02, 0x00, 0x05], "CONNACK: not authorized");
    } finally {
      socket.destroy();
    }
  });
});

describe("PROXY protocol on a tls listener", () => {
  let node: RunningNode;
  let logs: LogCapture;
  before(async () => {
    logs = new LogCapture("info");
    node = await startNode(
      {
        listeners: [
          {
            ...secureListener(pki, "tls", "require"),
            proxyProtocol: true,
            trustedProxies: TRUSTED,
          },
        ],
        auth: { allowAnonymous: false, certificateIdentity: "cn-is-clientid" },
        limits: { connectTimeoutMs: CONNECT_TIMEOUT_MS },
      },
      dir,
      { logger: logs.logger },
    );
  });
  after(async () => {
    await node.stop();
  });

  const tls = (withCertificate: boolean): IClientOptions => ({
    ca: pki.read(pki.caCert),
    ...(withCertificate
      ? { cert: pki.read(pki.clientCert), key: pki.read(pki.clientKey) }
      : { reconnectPeriod: 0 }),
    clientId: "pump-7",
  });

  it("decodes the header before the handshake and still verifies the client certificate", async () => {
    const header = proxyV2({ source: "198.51.100.7" });
    await throughRelay(node, "tls", { header }, async (url) => {
      const client = await connect(url, tls(true));
      await end(client);
    });
    const audit = await logs.waitFor(authSucceeded("pump-7"));
    assert.equal(audit.remoteAddress, "198.51.100.7");
    assert.equal(audit.method, "certificate");
    assert.equal(audit.certificateCn, "pump-7", "the verified certificate reached the broker");
  });

  it("still refuses a client without a certificate", async () => {
    const before = await metric(node, rejected("tls_handshake"));
    await throughRelay(node, "tls", { header: proxyV2() }, async (url) => {
      await assert.rejects(connect(url, tls(false)));
    });
    assert.equal(await metric(node, rejected("tls_handshake")), before + 1);
  });

  it("refuses an untrusted peer before any TLS", async () => {
    const before = await metric(node, rejected("proxy_untrusted"));
    await throughRelay(node, "tls", { header: proxyV2(), localAddress: "127.0.0.2" }, (url) =>
      assert.rejects(connect(url, tls(true))),
    );
    assert.equal(await metric(node, rejected("proxy_untrusted")), before + 1);
  });

  it("a header followed by no handshake is closed at the TLS handshake timeout", async () => {
    const before = await metric(node, rejected("tls_handshake"));
    const port = Number(new URL(node.urls.tls as string).port);
    const socket = await rawConnect(port);
    const started = Date.now();
    socket.write(proxyV2());
    await closedByPeer(socket);
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= CONNECT_TIMEOUT_MS - 50, `closed after ${elapsed} ms`);
    assert.equal(await metric(node, rejected("tls_handshake")), before + 1);
  });
});

describe("X-Forwarded-For on WebSocket listeners", () => {
  for (const type of ["ws", "wss"] as const) {
    describe(type, () => {
      let node: RunningNode;
      let logs: LogCapture;
      before(async () => {
        logs = new LogCapture("info");
        const listener =
          type === "wss" ? secureListener(pki, "wss") : { type, host: "127.0.0.1", port: 0 };
        node = await startNode(
          { listeners: [{ ...listener, trustedProxies: ["127.0.0.1/32", "10.0.0.0/8"] }] },
          dir,
          { logger: logs.logger },
        );
      });
      after(async () => {
        await node.stop();
      });

      const viaWebSocket = async (fromAddress: string, forwardedFor: string): Promise<LogLine> => {
        const clientId = unique(type);
        const client = await connect(node.urls[type] as string, {
          clientId,
          ...(type === "wss" ? { ca: pki.read(pki.caCert) } : {}),
          wsOptions: { localAddress: fromAddress, headers: { "X-Forwarded-For": forwardedFor } },
        });
        await end(client);
        return logs.waitFor(authSucceeded(clientId));
      };

      it("from a trusted proxy: the right-most address that is not a trusted proxy", async () => {
        const audit = await viaWebSocket("127.0.0.1", "192.0.2.1, 203.0.113.9, 10.1.2.3");
        assert.equal(audit.remoteAddress, "203.0.113.9");
      });

      it("from any other peer: the header is ignored", async () => {
        const audit = await viaWebSocket("127.0.0.2", "203.0.113.9");
        assert.equal(audit.remoteAddress, "127.0.0.2");
      });
    });
  }
});

describe("HAProxy with send-proxy-v2 in front of a node", () => {
  it("a client connecting through HAProxy from 127.0.0.3 is seen as 127.0.0.3", async () => {
    const logs = new LogCapture("info");
    const node = await startNode(
      {
        listeners: [
          { type: "tcp", host: "127.0.0.1", port: 0, proxyProtocol: true, trustedProxies: TRUSTED },
        ],
      },
      dir,
      { logger: logs.logger },
    );
    let lb: HaProxy | undefined;
    try {
      lb = await HaProxy.start(
        [
          {
            name: "node-1",
            mqttPort: Number(new URL(node.urls.tcp as string).port),
            httpPort: node.node.addresses.http.port,
          },
        ],
        { sendProxyV2: true },
      );
      const clientId = unique("haproxy");
      const client = await connect(lb.url, { clientId, fromAddress: "127.0.0.3" });
      await end(client);
      const audit = await logs.waitFor(authSucceeded(clientId));
      assert.equal(audit.remoteAddress, "127.0.0.3");
    } finally {
      await lb?.stop();
      await node.stop();
    }
  });
});

describe("per-address connection quotas behind a PROXY protocol load balancer", () => {
  it("count the decoded client addresses, not the proxy's", async () => {
    const node = await startNode({
      listeners: [
        { type: "tcp", host: "127.0.0.1", port: 0, proxyProtocol: true, trustedProxies: TRUSTED },
      ],
      limits: { connections: { perIp: 2 } },
    });
    const kept: MqttClient[] = [];
    try {
      const busy = proxyV2({ source: "198.51.100.20" });
      await throughRelay(node, "tcp", { header: busy }, async (url) => {
        kept.push(await connect(url, { clientId: unique("busy") }));
        kept.push(await connect(url, { clientId: unique("busy") }));
        await assert.rejects(connect(url, { clientId: unique("busy") }), "the third is refused");
        // Another client behind the same proxy is counted apart.
        const other = proxyV2({ source: "198.51.100.21" });
        await throughRelay(node, "tcp", { header: other }, async (otherUrl) => {
          kept.push(await connect(otherUrl, { clientId: unique("other") }));
        });
      });
      assert.equal(await metric(node, rejected("per_ip")), 1);
    } finally {
      await end(...kept);
      await node.stop();
    }
  });
});
