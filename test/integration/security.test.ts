import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { IClientOptions } from "mqtt";
import {
  createTestPki,
  issueClientCert,
  secureListener,
  type TestPki,
} from "../../harness/certs.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { LogCapture } from "../../harness/log-capture.js";
import {
  connect,
  end,
  Inbox,
  type MqttClient,
  subscribeGranted,
} from "../../harness/mqtt-client.js";
import { hashPassword } from "../../src/security/password-hash.js";

/**
 * The seed's threat: an attacker publishing as your thermostat, or commanding it. Each attack
 * is one test, against nodes configured as an operator would: password file or mutual TLS,
 * identity bound to client id, the thermostat ACL, deny by default.
 */
const ACL = `# devices write their own telemetry and read their own commands
pattern write devices/%c/telemetry/#
pattern read devices/%c/cmd/#

user scada
topic read devices/+/telemetry/#
topic write devices/+/cmd/#
`;

const PASSWORDS = { "thermo-a": "pw-a", "thermo-b": "pw-b", scada: "pw-scada" } as const;

let dir: string;
let pki: TestPki;
let passwordNode: RunningNode;
let certNode: RunningNode;
let certs: Record<"thermo-a" | "thermo-b" | "scada", { cert: Buffer; key: Buffer }>;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-security-"));
  pki = await createTestPki({ clientCn: "thermo-a" });
  const lines = await Promise.all(
    Object.entries(PASSWORDS).map(async ([u, p]) => `${u}:${await hashPassword(p)}`),
  );
  await writeFile(join(dir, "passwd"), `${lines.join("\n")}\n`);
  await writeFile(join(dir, "acl.conf"), ACL);
  certs = {
    "thermo-a": { cert: pki.read(pki.clientCert), key: pki.read(pki.clientKey) },
    "thermo-b": await issueClientCert(pki, "thermo-b").then((c) => ({
      cert: pki.read(c.cert),
      key: pki.read(c.key),
    })),
    scada: await issueClientCert(pki, "scada").then((c) => ({
      cert: pki.read(c.cert),
      key: pki.read(c.key),
    })),
  };
  passwordNode = await startNode(
    {
      auth: { allowAnonymous: false, passwordFile: "passwd", clientIdPattern: "%u" },
      acl: { file: "acl.conf" },
      limits: { authFailures: { perIp: 10, perUsername: 5, blockSeconds: 60 } },
    },
    dir,
  );
  certNode = await startNode(
    {
      listeners: [secureListener(pki, "tls", "require")],
      auth: { allowAnonymous: false, certificateIdentity: "cn-is-clientid" },
      acl: { file: "acl.conf" },
    },
    dir,
  );
});
after(async () => {
  await passwordNode.stop();
  await certNode.stop();
  await pki.cleanup();
  await rm(dir, { recursive: true, force: true });
});

const asUser = (
  user: keyof typeof PASSWORDS,
  options: IClientOptions & { fromAddress?: string } = {},
): Promise<MqttClient> =>
  connect(passwordNode.urls.tcp as string, {
    clientId: user,
    username: user,
    password: PASSWORDS[user],
    ...options,
  });

const asCert = (user: keyof typeof certs, clientId: string = user): Promise<MqttClient> =>
  connect(certNode.urls.tls as string, { clientId, ca: pki.read(pki.caCert), ...certs[user] });

async function metric(node: RunningNode, series: string): Promise<number> {
  const text = await fetch(`${node.httpUrl}/metrics`).then((r) => r.text());
  const line = text.split("\n").find((l) => l.startsWith(series));
  return line ? Number(line.split(" ").pop()) : 0;
}

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

describe("authentication", () => {
  it("refuses an anonymous client with CONNACK 5", async () => {
    assert.equal(await refusal(connect(passwordNode.urls.tcp as string, { clientId: "anon" })), 5);
  });

  it("refuses a wrong password with CONNACK 4", async () => {
    assert.equal(await refusal(asUser("thermo-a", { password: "guess" })), 4);
  });

  it("refuses an unknown user with CONNACK 4", async () => {
    assert.equal(
      await refusal(
        connect(passwordNode.urls.tcp as string, {
          clientId: "mallory",
          username: "mallory",
          password: "x",
        }),
      ),
      4,
    );
  });

  it("lets a legitimate device in", async () => {
    const client = await asUser("thermo-a");
    assert.equal(client.connected, true);
    await end(client);
  });
});

describe("the thermostat attacks", () => {
  it("device A cannot publish into device B's telemetry (dropped, still acknowledged)", async () => {
    const scada = await asUser("scada");
    const a = await asUser("thermo-a");
    try {
      const inbox = new Inbox(scada);
      await scada.subscribeAsync("devices/+/telemetry/#", { qos: 1 });
      const denied = await metric(passwordNode, 'sluice_acl_denied_total{action="publish"');
      await a.publishAsync("devices/thermo-b/telemetry/temp", "forged 99", { qos: 1 }); // PUBACK arrives
      await a.publishAsync("devices/thermo-a/telemetry/temp", "21.5", { qos: 1 });
      const [first] = await inbox.waitFor(1);
      assert.equal(
        first?.topic,
        "devices/thermo-a/telemetry/temp",
        "the forged reading never arrived",
      );
      assert.equal(
        await metric(passwordNode, 'sluice_acl_denied_total{action="publish"'),
        denied + 1,
      );
      assert.equal(a.connected, true, "the device stays connected");
    } finally {
      await end(scada, a);
    }
  });

  it("device A cannot subscribe to device B's commands (SUBACK 0x80 for that filter only)", async () => {
    const a = await asUser("thermo-a");
    try {
      const granted = await subscribeGranted(a, {
        "devices/thermo-b/cmd/#": { qos: 1 },
        "devices/thermo-a/cmd/#": { qos: 1 },
      });
      assert.deepEqual(granted, [0x80, 1]);
    } finally {
      await end(a);
    }
  });

  it("a device subscribing to # receives nothing of other devices, retained included", async () => {
    const scada = await asUser("scada");
    await scada.publishAsync("devices/thermo-b/cmd/setpoint", "18", { qos: 1, retain: true });
    await scada.publishAsync("devices/thermo-a/cmd/setpoint", "20", { qos: 1, retain: true });
    const a = await asUser("thermo-a");
    try {
      const inbox = new Inbox(a);
      const granted = await subscribeGranted(a, { "#": { qos: 1 } });
      assert.deepEqual(granted, [0x80], "# is wider than anything the device may read");
      await a.subscribeAsync("devices/thermo-a/cmd/#", { qos: 1 });
      const [own] = await inbox.waitFor(1);
      assert.equal(own?.topic, "devices/thermo-a/cmd/setpoint");
      await scada.publishAsync("devices/thermo-b/cmd/setpoint", "17", { qos: 1 });
      await scada.publishAsync("devices/thermo-a/cmd/setpoint", "19", { qos: 1 });
      const messages = await inbox.waitFor(2);
      assert.deepEqual(
        messages.map((m) => m.payload.toString()),
        ["20", "19"],
      );
    } finally {
      await end(scada, a);
    }
  });

  it("device A cannot connect with device B's client id (password)", async () => {
    assert.equal(await refusal(asUser("thermo-a", { clientId: "thermo-b" })), 5);
  });

  it("device A cannot take over device B's live session, nor resume its stored one", async () => {
    const b = await asUser("thermo-b", { clean: false });
    try {
      assert.equal(await refusal(asUser("thermo-a", { clientId: "thermo-b" })), 5);
      assert.equal(b.connected, true, "B was not kicked off");
    } finally {
      await end(b);
    }
  });

  it("device A's certificate with device B's id is refused under cn-is-clientid", async () => {
    assert.equal(await refusal(asCert("thermo-a", "thermo-b")), 5);
    const own = await asCert("thermo-a");
    assert.equal(own.connected, true);
    await end(own);
  });

  it("a certificate identity is used for ACLs whatever username the client sends", async () => {
    const scada = await asCert("scada");
    const a = await connect(certNode.urls.tls as string, {
      clientId: "thermo-a",
      username: "scada",
      password: "irrelevant",
      ca: pki.read(pki.caCert),
      ...certs["thermo-a"],
    });
    try {
      const granted = await subscribeGranted(a, { "devices/+/telemetry/#": { qos: 1 } });
      assert.deepEqual(granted, [0x80], "thermo-a stays thermo-a");
      const inbox = new Inbox(scada);
      await scada.subscribeAsync("devices/+/telemetry/#", { qos: 1 });
      await a.publishAsync("devices/thermo-a/telemetry/temp", "22", { qos: 1 });
      assert.equal((await inbox.waitFor(1))[0]?.topic, "devices/thermo-a/telemetry/temp");
    } finally {
      await end(scada, a);
    }
  });

  it("a will on a topic the device may not publish to refuses the CONNECT", async () => {
    const will = (topic: string) => ({
      topic,
      payload: Buffer.from("offline"),
      qos: 1 as const,
      retain: false,
    });
    assert.equal(
      await refusal(asUser("thermo-a", { will: will("devices/thermo-b/telemetry/status") })),
      5,
    );
    const own = await asUser("thermo-a", { will: will("devices/thermo-a/telemetry/status") });
    assert.equal(own.connected, true);
    await end(own);
  });

  it("no client may publish to $SYS, whatever the ACL says", async () => {
    const scada = await asUser("scada");
    try {
      const denied = await metric(passwordNode, 'sluice_acl_denied_total{action="publish"');
      await scada.publishAsync("$SYS/broker/new/clients", "thermo-b", { qos: 1 });
      assert.equal(
        await metric(passwordNode, 'sluice_acl_denied_total{action="publish"'),
        denied + 1,
      );
    } finally {
      await end(scada);
    }
  });
});

describe("cn-is-username with a client id pattern", () => {
  it("the certificate CN is the username, and client ids must match %u-*", async () => {
    const node = await startNode(
      {
        listeners: [secureListener(pki, "tls", "require")],
        auth: {
          allowAnonymous: false,
          certificateIdentity: "cn-is-username",
          clientIdPattern: "%u-*",
        },
        acl: { file: "acl.conf" },
      },
      dir,
    );
    try {
      const url = node.urls.tls as string;
      const withCert = (clientId: string) =>
        connect(url, { clientId, ca: pki.read(pki.caCert), ...certs["thermo-a"] });
      const own = await withCert("thermo-a-gateway");
      assert.equal(own.connected, true);
      await end(own);
      assert.equal(await refusal(withCert("thermo-b-gateway")), 5);
      assert.equal(await refusal(withCert("thermo-a")), 5, "the pattern needs the dash");
    } finally {
      await node.stop();
    }
  });
});

describe("brute-force lockout", () => {
  it("the 11th failure from one address is refused before any hashing; other addresses still get in", async () => {
    const url = passwordNode.urls.tcp as string;
    const hashed = () => metric(passwordNode, 'sluice_auth_failures_total{reason="unknown_user"');
    const locked = () => metric(passwordNode, 'sluice_auth_failures_total{reason="locked_out"');
    const localAddress = "127.0.0.9";
    const before = { hashed: await hashed(), locked: await locked() };
    for (let i = 1; i <= 10; i++) {
      assert.equal(
        await refusal(
          connect(url, { username: `guess-${i}`, password: "x", fromAddress: localAddress }),
        ),
        4,
      );
    }
    assert.equal(await hashed(), before.hashed + 10);
    assert.equal(
      await refusal(
        connect(url, { username: "guess-11", password: "x", fromAddress: localAddress }),
      ),
      5,
    );
    assert.equal(await hashed(), before.hashed + 10, "no hash computed for the 11th attempt");
    assert.equal(await locked(), before.locked + 1);
    assert.ok(
      (await metric(passwordNode, 'sluice_connections_rejected_total{reason="locked_out"')) >= 1,
    );
    // The right password from the locked address is refused too...
    assert.equal(await refusal(asUser("scada", { fromAddress: localAddress })), 5);
    // ...while a device elsewhere is unaffected.
    const good = await asUser("scada", { fromAddress: "127.0.0.10" });
    assert.equal(good.connected, true);
    await end(good);
  });

  it("wrong passwords for a device from 5 addresses do not lock it out: the right one from a sixth is admitted", async () => {
    for (let i = 0; i < 5; i++) {
      const wrong = asUser("thermo-a", { password: "guess", fromAddress: `127.0.1.${i + 1}` });
      assert.equal(await refusal(wrong), 4);
    }
    const device = await asUser("thermo-a", { fromAddress: "127.0.1.6" });
    assert.equal(device.connected, true);
    await end(device);
  });

  it("wrong passwords for a username from one address lock that username out from that address only", async () => {
    const attacker = "127.0.2.1";
    for (let i = 0; i < 5; i++) {
      const wrong = asUser("thermo-b", { password: "guess", fromAddress: attacker });
      assert.equal(await refusal(wrong), 4);
    }
    assert.equal(
      await refusal(asUser("thermo-b", { fromAddress: attacker })),
      5,
      "the right password from that address is locked out",
    );
    for (const admitted of [
      asUser("thermo-b", { fromAddress: "127.0.2.2" }),
      asUser("scada", { fromAddress: attacker }),
    ]) {
      const client = await admitted;
      assert.equal(client.connected, true);
      await end(client);
    }
  });
});

describe("guessing spread over many addresses", () => {
  let logs: LogCapture;
  let node: RunningNode;
  const guessFrom = async (address: string): Promise<void> => {
    const attempt = connect(node.urls.tcp as string, {
      clientId: "thermo-a",
      username: "thermo-a",
      password: "guess",
      fromAddress: address,
    });
    assert.equal(await refusal(attempt), 4);
  };
  const rightFrom = (address: string) =>
    connect(node.urls.tcp as string, {
      clientId: "thermo-a",
      username: "thermo-a",
      password: PASSWORDS["thermo-a"],
      fromAddress: address,
    });

  const start = async (block: boolean) => {
    logs = new LogCapture("info");
    node = await startNode(
      {
        auth: { allowAnonymous: false, passwordFile: "passwd" },
        limits: {
          authFailures: {
            perIp: 10,
            perUsername: 5,
            blockSeconds: 60,
            acrossSources: { alertAfter: 4, block },
          },
        },
      },
      dir,
      { logger: logs.logger },
    );
  };

  it("is counted per username, audited and exported, and still admits the device", async () => {
    await start(false);
    try {
      for (let i = 1; i <= 4; i++) await guessFrom(`127.0.3.${i}`);
      const line = await logs.waitFor((l) => l.event === "audit.username_targeted");
      assert.equal(line.username, "thermo-a");
      assert.equal(await metric(node, "sluice_auth_username_targeted_total"), 1);
      const device = await rightFrom("127.0.3.9");
      assert.equal(device.connected, true);
      await end(device);
    } finally {
      await node.stop();
    }
  });

  it("locks the username out everywhere only when acrossSources.block is on", async () => {
    await start(true);
    try {
      for (let i = 1; i <= 4; i++) await guessFrom(`127.0.4.${i}`);
      assert.equal(await refusal(rightFrom("127.0.4.9")), 5);
    } finally {
      await node.stop();
    }
  });
});

describe("certificate clients and lockout", () => {
  it("a client with a verified certificate is admitted from an address locked by password guesses", async () => {
    const node = await startNode(
      {
        listeners: [secureListener(pki, "tls", "request")],
        auth: {
          allowAnonymous: false,
          passwordFile: "passwd",
          certificateIdentity: "cn-is-clientid",
        },
        limits: { authFailures: { perIp: 2, perUsername: 2, blockSeconds: 60 } },
      },
      dir,
    );
    const url = node.urls.tls as string;
    const ca = pki.read(pki.caCert);
    const shared = "127.0.5.1";
    try {
      for (let i = 0; i < 2; i++) {
        const guess = connect(url, {
          ca,
          clientId: "thermo-b",
          username: "thermo-b",
          password: "guess",
          fromAddress: shared,
        });
        assert.equal(await refusal(guess), 4);
      }
      const passwordClient = connect(url, {
        ca,
        clientId: "thermo-b",
        username: "thermo-b",
        password: PASSWORDS["thermo-b"],
        fromAddress: shared,
      });
      assert.equal(await refusal(passwordClient), 5, "the address is locked for passwords");
      const certClient = await connect(url, {
        ca,
        clientId: "thermo-a",
        ...certs["thermo-a"],
        fromAddress: shared,
      });
      assert.equal(certClient.connected, true);
      await end(certClient);
    } finally {
      await node.stop();
    }
  });
});
