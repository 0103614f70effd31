import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { connect as tlsConnect } from "node:tls";
import WebSocket from "ws";
import {
  createTestPki,
  issueClientCert,
  secureListener,
  type TestPki,
  writeCrl,
} from "../../harness/certs.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, end } from "../../harness/mqtt-client.js";
import type { ListenerConfig } from "../../src/config/schema.js";
import { createListener } from "../../src/transport/create-listener.js";
import type { ClientConnection, Listener } from "../../src/transport/listener.js";

let pki: TestPki;
before(async () => {
  pki = await createTestPki({ clientCn: "pump-station-7" });
});
after(async () => {
  await pki.cleanup();
});

describe("mutual TLS on a node", () => {
  for (const type of ["tls", "wss"] as const) {
    describe(`${type} listener requiring client certificates`, () => {
      let running: RunningNode;
      before(async () => {
        running = await startNode({ listeners: [secureListener(pki, type, "require")] });
      });
      after(async () => {
        await running.stop();
      });
      const url = () => running.urls[type] as string;
      const ca = () => pki.read(pki.caCert);

      it("accepts a client whose certificate chains to the CA", async () => {
        const client = await connect(url(), {
          ca: ca(),
          cert: pki.read(pki.clientCert),
          key: pki.read(pki.clientKey),
        });
        assert.equal(client.connected, true);
        await end(client);
      });

      it("refuses a client without a certificate", async () => {
        await assert.rejects(connect(url(), { ca: ca() }));
      });

      it("refuses a certificate from another CA", async () => {
        await assert.rejects(
          connect(url(), {
            ca: ca(),
            cert: pki.read(pki.strangerCert),
            key: pki.read(pki.strangerKey),
          }),
        );
      });

      it("refuses an expired certificate", async () => {
        await assert.rejects(
          connect(url(), {
            ca: ca(),
            cert: pki.read(pki.expiredClientCert),
            key: pki.read(pki.expiredClientKey),
          }),
        );
      });
    });
  }

  it("refuses a client certificate on the configured CRL during the handshake", async () => {
    const revoked = await issueClientCert(pki, "stolen-plc");
    const crl = await writeCrl(pki, [revoked.cert]);
    const running = await startNode({
      listeners: [{ ...secureListener(pki, "tls", "require"), crl }],
    });
    try {
      const url = running.urls.tls as string;
      const ca = pki.read(pki.caCert);
      await assert.rejects(
        connect(url, { ca, cert: pki.read(revoked.cert), key: pki.read(revoked.key) }),
      );
      const good = await connect(url, {
        ca,
        cert: pki.read(pki.clientCert),
        key: pki.read(pki.clientKey),
      });
      assert.equal(good.connected, true);
      await end(good);
    } finally {
      await running.stop();
    }
  });

  it("refuses TLS 1.1 and older", async () => {
    const running = await startNode({
      listeners: [
        { type: "tls", host: "127.0.0.1", port: 0, cert: pki.serverCert, key: pki.serverKey },
      ],
    });
    try {
      const port = Number(new URL(running.urls.tls as string).port);
      const outcome = await new Promise<string>((resolve) => {
        const socket = tlsConnect({
          port,
          host: "127.0.0.1",
          ca: pki.read(pki.caCert),
          maxVersion: "TLSv1.1",
          minVersion: "TLSv1",
        });
        socket.once("secureConnect", () => resolve("connected"));
        socket.once("error", (error) => resolve(error.message));
      });
      assert.notEqual(outcome, "connected");
    } finally {
      await running.stop();
    }
  });
});

describe("listeners expose only a verified peer certificate", () => {
  async function withListener(
    config: ListenerConfig,
    body: (port: number, accepted: Promise<ClientConnection>) => Promise<void>,
  ): Promise<void> {
    let deliver: (c: ClientConnection) => void = () => {};
    const accepted = new Promise<ClientConnection>((resolve) => {
      deliver = resolve;
    });
    const listener: Listener = createListener(
      config,
      0,
      { admitSocket: () => "admitted", onConnection: (c) => deliver(c), onRejected: () => {} },
      { maxPacketBytes: 1024, connectTimeoutMs: 5000 },
    );
    const { port } = await listener.listen();
    try {
      await body(port, accepted);
    } finally {
      await listener.stopAccepting();
    }
  }

  const tlsConfig = (type: "tls" | "wss"): ListenerConfig =>
    ({
      type,
      host: "127.0.0.1",
      port: 0,
      path: "/mqtt",
      proxyProtocol: false,
      trustedProxies: [],
      cert: pki.serverCert,
      key: pki.serverKey,
      ca: pki.caCert,
      requestCert: true,
      requireClientCert: false,
      registryCrl: false,
      minVersion: "TLSv1.2",
    }) as ListenerConfig;

  it("tls: the CN of a verified client certificate reaches the connection", async () => {
    await withListener(tlsConfig("tls"), async (port, accepted) => {
      const socket = tlsConnect({
        port,
        host: "127.0.0.1",
        ca: pki.read(pki.caCert),
        cert: pki.read(pki.clientCert),
        key: pki.read(pki.clientKey),
      });
      socket.on("error", () => {});
      const connection = await accepted;
      assert.equal(connection.listener, "tls");
      assert.equal(connection.peerCertificate?.subject.CN, "pump-station-7");
      socket.destroy();
      connection.stream.destroy();
    });
  });

  it("tls: a certificate that does not verify is not exposed when only requested", async () => {
    await withListener(tlsConfig("tls"), async (port, accepted) => {
      const socket = tlsConnect({
        port,
        host: "127.0.0.1",
        ca: pki.read(pki.caCert),
        cert: pki.read(pki.strangerCert),
        key: pki.read(pki.strangerKey),
      });
      socket.on("error", () => {});
      const connection = await accepted;
      assert.equal(connection.peerCertificate, undefined);
      socket.destroy();
      connection.stream.destroy();
    });
  });

  it("wss: the CN of a verified client certificate reaches the connection", async () => {
    await withListener(tlsConfig("wss"), async (port, accepted) => {
      const ws = new WebSocket(`wss://127.0.0.1:${port}/mqtt`, "mqtt", {
        ca: pki.read(pki.caCert),
        cert: pki.read(pki.clientCert),
        key: pki.read(pki.clientKey),
      });
      ws.on("error", () => {});
      const connection = await accepted;
      assert.equal(connection.listener, "wss");
      assert.equal(connection.peerCertificate?.subject.CN, "pump-station-7");
      ws.terminate();
      connection.stream.destroy();
    });
  });
});
