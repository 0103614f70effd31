import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import mqtt, { type IConnackPacket, type MqttClient, type Packet } from "mqtt";
import type { IAuthPacket } from "mqtt-packet";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { LogCapture } from "../../harness/log-capture.js";
import { connect, end, subscribeGranted } from "../../harness/mqtt-client.js";
import { rawConnect } from "../../harness/raw-socket.js";
import { ScramClient } from "../../harness/scram-client.js";
import { scramConnect } from "../../harness/scram-connect.js";
import { WireClient } from "../../harness/wire-client.js";
import { hashPassword, hashPasswordScram } from "../../src/security/password-hash.js";

/**
 * Issue 15 (stretch): MQTT 5 enhanced authentication with SCRAM-SHA-256 against the same
 * password file, with the same lockout, audit, identity binding and ACLs as passwords.
 */
const METHOD = "SCRAM-SHA-256";
const ACL = `user dev-a
topic readwrite dev/a/#
`;

/** One SCRAM exchange over a raw connection, opened by `opening` (CONNECT or AUTH 0x19). */
async function rawExchange(
  wire: WireClient,
  scram: ScramClient,
  open: (clientFirst: Buffer) => void,
): Promise<void> {
  const before = wire.received("auth").length;
  open(scram.clientFirst);
  await wire.waitForCount("auth", before + 1);
  const challenge = wire.received("auth")[before] as IAuthPacket;
  assert.equal(challenge.reasonCode, 0x18);
  wire.send({
    cmd: "auth",
    reasonCode: 0x18,
    properties: {
      authenticationMethod: METHOD,
      authenticationData: scram.final(challenge.properties?.authenticationData as Buffer),
    },
  });
}

async function rawScramClient(
  url: string,
  clientId: string,
  password: string,
): Promise<WireClient> {
  const wire = new WireClient(await rawConnect(Number(new URL(url).port)), 5);
  const scram = new ScramClient("dev-a", password);
  await rawExchange(wire, scram, (clientFirst) =>
    wire.send({
      cmd: "connect",
      protocolVersion: 5,
      clientId,
      keepalive: 60,
      clean: true,
      properties: { authenticationMethod: METHOD, authenticationData: clientFirst },
    }),
  );
  const connack = (await wire.waitFor("CONNACK", (p) => p.cmd === "connack")) as IConnackPacket;
  assert.equal(connack.reasonCode, 0);
  return wire;
}

function reauthenticate(wire: WireClient, clientFirst: Buffer): void {
  wire.send({
    cmd: "auth",
    reasonCode: 0x19,
    properties: { authenticationMethod: METHOD, authenticationData: clientFirst },
  });
}

describe("MQTT 5 enhanced authentication: SCRAM-SHA-256", () => {
  let dir: string;
  let node: RunningNode;
  let url: string;
  let logs: LogCapture;
  const open: MqttClient[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sluice-scram-"));
    const lines = [
      `dev-a:${await hashPasswordScram("pencil-a")}`,
      `dev-b:${await hashPasswordScram("pencil-b")}`,
      `lock-me:${await hashPasswordScram("right")}`,
      `plain:${await hashPassword("scrypt-pw")}`,
    ];
    await writeFile(join(dir, "passwd"), `${lines.join("\n")}\n`);
    await writeFile(join(dir, "acl.conf"), ACL);
    logs = new LogCapture("info");
    node = await startNode(
      {
        auth: { allowAnonymous: false, passwordFile: "passwd", clientIdPattern: "%u-*" },
        acl: { file: "acl.conf" },
        limits: {
          authFailures: { perIp: 100, perUsername: 2, blockSeconds: 60 },
          connectTimeoutMs: 1_000,
        },
      },
      dir,
      { logger: logs.logger },
    );
    url = node.urls.tcp as string;
  });
  after(async () => {
    await end(...open);
    await node?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("admits a client that proves its password, and proves the server to it in the CONNACK", async () => {
    const outcome = await scramConnect(url, "dev-a", "pencil-a");
    open.push(outcome.client);
    assert.equal(outcome.connack.reasonCode, 0);
    assert.equal(outcome.challenges.length, 1);
    assert.equal(outcome.challenges[0]?.reasonCode, 0x18);
    assert.equal(outcome.challenges[0]?.properties?.authenticationMethod, METHOD);
    assert.equal(outcome.connack.properties?.authenticationMethod, METHOD);
    assert.equal(
      outcome.scram.serverVerified(outcome.connack.properties?.authenticationData),
      true,
    );
    const audited = await logs.waitFor(
      (l) => l.event === "audit.auth_succeeded" && l.username === "dev-a",
    );
    assert.equal(audited.method, "scram");
  });

  it("the verified user is the ACL's identity: its own topics only", async () => {
    const outcome = await scramConnect(url, "dev-a", "pencil-a", "dev-a-acl");
    open.push(outcome.client);
    assert.equal(outcome.connack.reasonCode, 0);
    const granted = await subscribeGranted(outcome.client, {
      "dev/a/cmd": { qos: 1 },
      "dev/b/cmd": { qos: 1 },
    });
    assert.deepEqual(granted, [1, 0x87]);
  });

  it("refuses a wrong password with 0x86, audited as bad_password", async () => {
    const outcome = await scramConnect(url, "dev-b", "not-pencil");
    open.push(outcome.client);
    assert.equal(outcome.connack.reasonCode, 0x86);
    assert.equal(outcome.connack.properties?.authenticationData, undefined);
    const line = await logs.waitFor(
      (l) => l.event === "audit.auth_failed" && l.username === "dev-b",
    );
    assert.equal(line.reason, "bad_password");
  });

  it("an unknown user and a user without a SCRAM verifier fail alike for the client", async () => {
    const ghost = await scramConnect(url, "ghost", "x");
    const plain = await scramConnect(url, "plain", "scrypt-pw");
    open.push(ghost.client, plain.client);
    assert.equal(ghost.connack.reasonCode, 0x86);
    assert.equal(plain.connack.reasonCode, 0x86);
    assert.equal(ghost.challenges.length, 1, "the unknown user got a challenge too");
    const reasons = await Promise.all(
      ["ghost", "plain"].map((u) =>
        logs.waitFor((l) => l.event === "audit.auth_failed" && l.username === u),
      ),
    );
    assert.deepEqual(
      reasons.map((l) => l.reason),
      ["unknown_user", "scram_not_enabled"],
    );
  });

  it("failed exchanges count towards the lockout: then 0x8A before any exchange", async () => {
    for (let i = 0; i < 2; i++) {
      const failed = await scramConnect(url, "lock-me", "wrong", `lock-me-${i}`);
      open.push(failed.client);
      assert.equal(failed.connack.reasonCode, 0x86);
    }
    const locked = await scramConnect(url, "lock-me", "right", "lock-me-9");
    open.push(locked.client);
    assert.equal(locked.connack.reasonCode, 0x8a);
  });

  it("keeps identity binding: a verified user may not take another's client id", async () => {
    const outcome = await scramConnect(url, "dev-a", "pencil-a", "dev-b-1");
    open.push(outcome.client);
    assert.equal(outcome.connack.reasonCode, 0x87);
  });

  it("a SCRAM verifier also verifies a plain password CONNECT (MQTT 3.1.1)", async () => {
    const client = await connect(url, {
      clientId: "dev-a-v4",
      username: "dev-a",
      password: "pencil-a",
    });
    open.push(client);
    assert.equal(client.connected, true);
  });

  it("refuses an Authentication Method it does not offer with 0x8C", async () => {
    const client = mqtt.connect(url, {
      protocolVersion: 5,
      clientId: "dev-a-k",
      reconnectPeriod: 0,
      properties: { authenticationMethod: "KERBEROS" },
    });
    open.push(client);
    client.on("error", () => {});
    const connack = await withDeadline(
      new Promise<IConnackPacket>((resolve) =>
        client.on("packetreceive", (p: Packet) => p.cmd === "connack" && resolve(p)),
      ),
      5_000,
      "CONNACK",
    );
    assert.equal(connack.reasonCode, 0x8c);
  });

  it("closes a client that sends anything but AUTH during the exchange", async () => {
    const scram = new ScramClient("dev-a", "pencil-a");
    const wire = new WireClient(await rawConnect(Number(new URL(url).port)), 5);
    wire.send({
      cmd: "connect",
      protocolVersion: 5,
      clientId: "dev-a-raw",
      keepalive: 60,
      clean: true,
      properties: { authenticationMethod: METHOD, authenticationData: scram.clientFirst },
    });
    await wire.waitFor("AUTH", (p) => p.cmd === "auth");
    wire.send({ cmd: "pingreq" });
    await wire.closedWithin(2_000);
    assert.equal(wire.received("connack").length, 0);
    assert.equal(wire.received("pingresp").length, 0);
  });

  it("closes an exchange the client never finishes at the connect timeout", async () => {
    const scram = new ScramClient("dev-a", "pencil-a");
    const wire = new WireClient(await rawConnect(Number(new URL(url).port)), 5);
    const sent = Date.now();
    wire.send({
      cmd: "connect",
      protocolVersion: 5,
      clientId: "dev-a-slow",
      keepalive: 60,
      clean: true,
      properties: { authenticationMethod: METHOD, authenticationData: scram.clientFirst },
    });
    await wire.waitFor("AUTH", (p) => p.cmd === "auth");
    await wire.closedWithin(3_000);
    assert.ok(Date.now() - sent >= 900, "closed before the connect timeout");
    assert.equal(wire.received("connack").length, 0);
  });

  it("re-authenticates a connected client as the same user, other packets flowing meanwhile", async () => {
    const wire = await rawScramClient(url, "dev-a-re", "pencil-a");
    const again = new ScramClient("dev-a", "pencil-a");
    await rawExchange(wire, again, (clientFirst) => reauthenticate(wire, clientFirst));
    await wire.roundTrip();
    const success = (await wire.waitFor(
      "AUTH 0x00",
      (p) => p.cmd === "auth" && p.reasonCode === 0,
    )) as IAuthPacket;
    assert.equal(again.serverVerified(success.properties?.authenticationData), true);
    await wire.roundTrip();
    assert.equal(wire.received("disconnect").length, 0);
    wire.stream.destroy();
  });

  it("a re-authentication that fails, or names another user, ends the connection with 0x87", async () => {
    for (const [user, password] of [
      ["dev-a", "wrong"],
      ["dev-b", "pencil-b"],
    ] as const) {
      const wire = await rawScramClient(url, `dev-a-re-${user}`, "pencil-a");
      await rawExchange(wire, new ScramClient(user, password), (clientFirst) =>
        reauthenticate(wire, clientFirst),
      );
      const disconnect = await wire.waitFor("DISCONNECT", (p) => p.cmd === "disconnect");
      assert.equal(disconnect.cmd === "disconnect" && disconnect.reasonCode, 0x87, user);
      await wire.closedWithin();
    }
    const line = await logs.waitFor(
      (l) => l.event === "audit.auth_failed" && l.reason === "reauthentication_failed",
    );
    assert.equal(line.username, "dev-a");
  });

  it("an AUTH that does not open a re-authentication properly ends the connection with 0x82", async () => {
    const wire = await rawScramClient(url, "dev-a-bad-auth", "pencil-a");
    wire.send({
      cmd: "auth",
      reasonCode: 0x18,
      properties: { authenticationMethod: METHOD, authenticationData: Buffer.from("x") },
    });
    const disconnect = await wire.waitFor("DISCONNECT", (p) => p.cmd === "disconnect");
    assert.equal(disconnect.cmd === "disconnect" && disconnect.reasonCode, 0x82);
  });
});
