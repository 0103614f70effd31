import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { callApi, newAdminToken } from "../../harness/admin-api.js";
import { createTestPki, opensslKeyAndCsr, type TestPki } from "../../harness/certs.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { closedAfter, connect, end, type MqttClient } from "../../harness/mqtt-client.js";
import { RedisServer } from "../../harness/redis-server.js";
import { runCli } from "../../harness/sluice-process.js";
import { createCa } from "../../src/pki/create-ca.js";

/**
 * Factory provisioning end to end on two nodes over Redis, with real TLS: an operator creates a
 * certificate-only device and a one-time enrollment token on node A; the device enrolls (the
 * `sluice enroll` CLI), connects over mTLS to node B, and is shut out when its certificate is
 * revoked on node A: its connection on node B closes and its next handshake fails.
 */
const run = promisify(execFile);
const admin = newAdminToken();
let pki: TestPki;
let redis: RedisServer;
let a: RunningNode;
let b: RunningNode;

before(async () => {
  pki = await createTestPki();
  const ca = await createCa({ commonName: "Sluice test device CA" });
  await writeFile(join(pki.dir, "device-ca.crt"), ca.certPem);
  await writeFile(join(pki.dir, "device-ca.key"), ca.keyPem, { mode: 0o600 });
  redis = await RedisServer.start();
  const prefix = `e${randomBytes(4).toString("hex")}:`;
  const node = (nodeId: string) =>
    startNode(
      {
        nodeId,
        listeners: [
          {
            type: "tls",
            host: "127.0.0.1",
            port: 0,
            cert: pki.serverCert,
            key: pki.serverKey,
            ca: "device-ca.crt",
            requestCert: true,
            requireClientCert: true,
            registryCrl: true,
          },
        ],
        auth: { allowAnonymous: false, certificateIdentity: "cn-is-clientid" },
        redis: { url: redis.url, keyPrefix: prefix },
        admin: {
          host: "127.0.0.1",
          port: 0,
          tokens: [admin.digest],
          ca: { cert: "device-ca.crt", key: "device-ca.key", deviceCertificateDays: 7 },
        },
      },
      pki.dir,
    );
  a = await node("enroll-a");
  b = await node("enroll-b");
});
after(async () => {
  await a?.stop();
  await b?.stop();
  await redis?.stop();
});

const apiOf = (node: RunningNode) => `http://127.0.0.1:${node.node.addresses.admin?.port}`;
const callA = (method: string, path: string, body?: unknown) =>
  callApi(apiOf(a), method, path, { token: admin.token, ...(body === undefined ? {} : { body }) });

async function connectWith(node: RunningNode, id: string, prefix: string): Promise<MqttClient> {
  return connect(node.urls.tls as string, {
    clientId: id,
    cert: await readFile(`${prefix}.crt`),
    key: await readFile(`${prefix}.key`),
    ca: await readFile(pki.caCert),
    rejectUnauthorized: true,
  });
}

describe("device enrollment and certificate revocation across two nodes", () => {
  it("a device enrolls with a one-time token, connects over mTLS elsewhere, and is shut out within 1 s of revocation", async () => {
    assert.equal(
      (await callA("POST", "/api/v1/devices", { id: "meter-1", password: false })).status,
      201,
    );
    const token = await callA("POST", "/api/v1/devices/meter-1/enrollment-token", {
      ttlSeconds: 600,
    });
    assert.equal(token.status, 201, token.text);

    const prefix = join(pki.dir, "meter-1");
    const env = { SLUICE_ADMIN_URL: apiOf(a), SLUICE_ENROLL_TOKEN: token.json.token };
    const enrolled = await runCli(["enroll", "--id", "meter-1", "--out", prefix], env);
    assert.equal(enrolled.code, 0, enrolled.stderr);
    const again = await runCli(["enroll", "--id", "meter-1", "--out", `${prefix}-again`], env);
    assert.equal(again.code, 2, "a used token is refused");
    assert.match(again.stderr, /403/);

    // The issued certificate verifies against the device CA (OpenSSL's own check).
    await run("openssl", ["verify", "-CAfile", join(pki.dir, "device-ca.crt"), `${prefix}.crt`]);
    const device = await callA("GET", "/api/v1/devices/meter-1");
    const serial = device.json.certificates[0]?.serial as string;
    assert.match(serial, /^[0-9A-F]+$/);

    const client = await connectWith(b, "meter-1", prefix);
    const started = Date.now();
    assert.equal((await callA("POST", "/api/v1/certificates/revoke", { serial })).status, 204);
    const ms = await closedAfter(client, started);
    process.stdout.write(
      `# certificate revoked on node A: connection on node B closed after ${ms} ms\n`,
    );
    assert.ok(ms < 1_000, `closed after ${ms} ms`);
    await end(client);
    // Refused at the handshake now: the CRL from the registry is in node B's TLS listener.
    for (const node of [a, b]) {
      await assert.rejects(connectWith(node, "meter-1", prefix), (error: Error) => {
        // A TLS failure, not a CONNACK refusal: the handshake itself did not pass.
        assert.doesNotMatch(error.message, /Connection refused/);
        return true;
      });
    }
    const crl = await callA("GET", "/api/v1/ca/crl");
    assert.match(crl.text, /BEGIN X509 CRL/);
  });

  it("a certificate from a CSR replaces the device's earlier one, which stops working", async () => {
    assert.equal(
      (await callA("POST", "/api/v1/devices", { id: "meter-2", password: false })).status,
      201,
    );
    const first = join(pki.dir, "meter-2-first");
    const issued = await runCli(["device", "enroll", "meter-2", "--out", first], {
      SLUICE_ADMIN_URL: apiOf(a),
      SLUICE_ADMIN_TOKEN: admin.token,
    });
    assert.equal(issued.code, 0, issued.stderr);
    const client = await connectWith(b, "meter-2", first);

    const second = join(pki.dir, "meter-2-second");
    await opensslKeyAndCsr(second, "/CN=meter-2");
    const wrongCn = await callA("POST", "/api/v1/devices/meter-1/certificate", {
      csr: await readFile(`${second}.csr`, "utf8"),
    });
    assert.equal(wrongCn.status, 400, "a CSR for another device's name is refused");
    const replaced = await callA("POST", "/api/v1/devices/meter-2/certificate", {
      csr: await readFile(`${second}.csr`, "utf8"),
    });
    assert.equal(replaced.status, 201, replaced.text);
    assert.equal(replaced.json.privateKey, undefined, "the device keeps its own key");
    await writeFile(`${second}.crt`, replaced.json.certificate);

    await closedAfter(client, Date.now());
    await end(client);
    await assert.rejects(connectWith(b, "meter-2", first));
    await end(await connectWith(b, "meter-2", second));
  });

  it("`sluice ca issue --id` against the API issues like `device enroll`; `ca revoke` revokes", async () => {
    assert.equal(
      (await callA("POST", "/api/v1/devices", { id: "meter-4", password: false })).status,
      201,
    );
    const env = { SLUICE_ADMIN_URL: apiOf(a), SLUICE_ADMIN_TOKEN: admin.token };
    const prefix = join(pki.dir, "meter-4");
    const issued = await runCli(
      ["ca", "issue", "--id", "meter-4", "--days", "2", "--out", prefix],
      env,
    );
    assert.equal(issued.code, 0, issued.stderr);
    const client = await connectWith(b, "meter-4", prefix);
    const { serial } = (await callA("GET", "/api/v1/devices/meter-4")).json.certificates[0];
    const revoked = await runCli(["ca", "revoke", "--serial", serial], env);
    assert.equal(revoked.code, 0, revoked.stderr);
    await closedAfter(client, Date.now());
    await end(client);
    await assert.rejects(connectWith(b, "meter-4", prefix));
  });

  it("refuses enrollment with a made-up token, for another device, or for a disabled one", async () => {
    assert.equal(
      (await callA("POST", "/api/v1/devices", { id: "meter-3", password: false })).status,
      201,
    );
    const made = await callApi(apiOf(b), "POST", "/api/v1/enroll", {
      body: { id: "meter-3", token: randomBytes(32).toString("base64url") },
    });
    assert.equal(made.status, 403);
    const token = await callA("POST", "/api/v1/devices/meter-3/enrollment-token");
    assert.equal(token.status, 201);
    const stolen = await callApi(apiOf(b), "POST", "/api/v1/enroll", {
      body: { id: "meter-1", token: token.json.token },
    });
    assert.equal(stolen.status, 403, "a token only works for its own device");
    const token2 = await callA("POST", "/api/v1/devices/meter-3/enrollment-token");
    assert.equal((await callA("PATCH", "/api/v1/devices/meter-3", { enabled: false })).status, 200);
    const disabled = await callApi(apiOf(b), "POST", "/api/v1/enroll", {
      body: { id: "meter-3", token: token2.json.token },
    });
    assert.equal(disabled.status, 403);
    const device = await callA("GET", "/api/v1/devices/meter-3");
    assert.deepEqual(device.json.certificates, [], "nothing was issued");
  });
});
