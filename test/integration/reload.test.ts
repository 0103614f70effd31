import assert from "node:assert/strict";
import { copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect as tlsConnect } from "node:tls";
import {
  createTestPki,
  issueClientCert,
  issueServerCert,
  secureListener,
  type TestPki,
  writeCrl,
} from "../../harness/certs.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, end, type MqttClient, subscribeGranted } from "../../harness/mqtt-client.js";
import { hashPassword } from "../../src/security/password-hash.js";

/** Hot reload: files change under a running node, connections are not dropped needlessly. */
let dir: string;
let pki: TestPki;
let running: RunningNode;
const ACL = "user alpha\ntopic readwrite alpha/#\nuser beta\ntopic readwrite beta/#\n";

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-reload-"));
  pki = await createTestPki();
  await copyFile(pki.serverCert, join(dir, "server.crt"));
  await copyFile(pki.serverKey, join(dir, "server.key"));
  await writeFile(
    join(dir, "passwd"),
    `alpha:${await hashPassword("a")}\nbeta:${await hashPassword("b")}\n`,
  );
  await writeFile(join(dir, "acl.conf"), ACL);
  running = await startNode(
    {
      listeners: [
        { type: "tcp", host: "127.0.0.1", port: 0 },
        { type: "tls", host: "127.0.0.1", port: 0, cert: "server.crt", key: "server.key" },
      ],
      auth: { allowAnonymous: false, passwordFile: "passwd" },
      acl: { file: "acl.conf" },
    },
    dir,
  );
});
after(async () => {
  await running.stop();
  await pki.cleanup();
  await rm(dir, { recursive: true, force: true });
});

const asUser = (username: "alpha" | "beta"): Promise<MqttClient> =>
  connect(running.urls.tcp as string, {
    clientId: `${username}-1`,
    username,
    password: username[0],
  });

describe("hot reload", () => {
  it("removing a user from the watched password file disconnects that user only", async () => {
    const alpha = await asUser("alpha");
    const beta = await asUser("beta");
    try {
      const betaClosed = new Promise<void>((resolve) => beta.once("close", () => resolve()));
      const text = await readFile(join(dir, "passwd"), "utf8");
      await writeFile(join(dir, "passwd"), text.replace(/^beta:.*\n/m, "")); // the file watcher reloads
      await betaClosed;
      assert.equal(alpha.connected, true);
      await assert.rejects(asUser("beta"));
    } finally {
      await end(alpha, beta);
    }
  });

  it("an invalid ACL file is rejected and the old one stays in force", async () => {
    await writeFile(join(dir, "acl.conf"), "user alpha\ntopic readwrite alpha/#\nnonsense line\n");
    await running.node.reload();
    const alpha = await asUser("alpha");
    try {
      assert.deepEqual(
        await subscribeGranted(alpha, { "alpha/x": { qos: 0 }, "beta/x": { qos: 0 } }),
        [0, 0x80],
      );
    } finally {
      await end(alpha);
      await writeFile(join(dir, "acl.conf"), ACL);
    }
  });

  it("a valid new ACL applies to connected clients at once", async () => {
    const alpha = await asUser("alpha");
    try {
      assert.deepEqual(await subscribeGranted(alpha, { "shared/x": { qos: 0 } }), [0x80]);
      await writeFile(join(dir, "acl.conf"), `${ACL}pattern read shared/#\n`);
      await running.node.reload();
      assert.deepEqual(await subscribeGranted(alpha, { "shared/x": { qos: 0 } }), [0]);
    } finally {
      await end(alpha);
      await writeFile(join(dir, "acl.conf"), ACL);
      await running.node.reload();
    }
  });

  it("revoking a connected device's certificate in the CRL disconnects it", async () => {
    const crl = join(dir, "ca.crl");
    await copyFile(await writeCrl(pki, []), crl);
    const stolen = await issueClientCert(pki, "stolen-rtu");
    const certNode = await startNode(
      {
        listeners: [{ ...secureListener(pki, "tls", "require"), crl: "ca.crl" }],
        auth: { allowAnonymous: false, certificateIdentity: "cn-is-clientid" },
      },
      dir,
    );
    const ca = pki.read(pki.caCert);
    const url = certNode.urls.tls as string;
    const asDevice = (cert: { cert: string; key: string }, clientId: string) =>
      connect(url, { clientId, ca, cert: pki.read(cert.cert), key: pki.read(cert.key) });
    const rtu = await asDevice(stolen, "stolen-rtu");
    const other = await asDevice({ cert: pki.clientCert, key: pki.clientKey }, "device-1");
    try {
      const closed = new Promise<void>((resolve) => rtu.once("close", () => resolve()));
      await copyFile(await writeCrl(pki, [stolen.cert]), crl);
      await certNode.node.reload();
      await closed;
      assert.equal(other.connected, true, "other devices stay connected");
      await assert.rejects(asDevice(stolen, "stolen-rtu"), "refused at the handshake from now on");
    } finally {
      await end(rtu, other);
      await certNode.stop();
    }
  });

  it("a rotated server certificate is served to new connections without a restart", async () => {
    const port = Number(new URL(running.urls.tls as string).port);
    const serialOfServer = () =>
      new Promise<string>((resolve, reject) => {
        const socket = tlsConnect({ port, host: "127.0.0.1", ca: pki.read(pki.caCert) }, () => {
          resolve(socket.getPeerCertificate().serialNumber);
          socket.destroy();
        });
        socket.once("error", reject);
      });
    const before = await serialOfServer();
    const rotated = await issueServerCert(pki);
    await copyFile(rotated.cert, join(dir, "server.crt"));
    await copyFile(rotated.key, join(dir, "server.key"));
    await running.node.reload();
    const after = await serialOfServer();
    assert.notEqual(after, before);
  });
});
