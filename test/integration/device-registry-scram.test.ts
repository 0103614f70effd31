import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  adminCaller,
  adminUrlOf,
  callApi,
  newAdminToken,
  startRegistryNode,
} from "../../harness/admin-api.js";
import { withDeadline } from "../../harness/deadline.js";
import type { RunningNode } from "../../harness/in-process-node.js";
import { closedAfter, connect, end } from "../../harness/mqtt-client.js";
import { RedisServer } from "../../harness/redis-server.js";
import { scramConnect } from "../../harness/scram-connect.js";
import { runCli } from "../../harness/sluice-process.js";
import { hashPasswordScram } from "../../src/security/password-hash.js";

/**
 * Registry devices with a SCRAM-SHA-256 verifier: made through the admin API or CLI on node A
 * (generated, or a verifier made elsewhere), they authenticate with MQTT 5 enhanced
 * authentication through node B, and with a plain password too.
 */
const admin = newAdminToken();
let redis: RedisServer;
let a: RunningNode;
let b: RunningNode;
let dir: string;

const clusterNode = (nodeId: string, prefix: string) =>
  startRegistryNode(nodeId, redis.url, prefix, admin.digest);
const apiOf = adminUrlOf;
const callA = adminCaller(() => a, admin.token);

/** The CONNACK code of a SCRAM CONNECT to node B as the device (client id = its id). */
async function scramToB(id: string, password: string): Promise<number> {
  const outcome = await scramConnect(b.urls.tcp as string, id, password, id);
  try {
    if (outcome.connack.reasonCode === 0) {
      const signature = outcome.connack.properties?.authenticationData;
      assert.equal(outcome.scram.serverVerified(signature), true, "the server proved itself");
    }
    return outcome.connack.reasonCode ?? 0;
  } finally {
    await end(outcome.client);
  }
}

/**
 * Rotates with `rotate` while the device holds a connection on node B, and returns once B has
 * closed it: B has then dropped its cached record, so the next CONNECT there reads the new one.
 */
async function rotateSeenByB<T>(
  id: string,
  password: string,
  rotate: () => Promise<T>,
): Promise<T> {
  const held = await connect(b.urls.tcp as string, { clientId: id, username: id, password });
  try {
    const result = await rotate();
    await withDeadline(closedAfter(held, Date.now()), 5_000, "node B closing the old connection");
    return result;
  } finally {
    await end(held);
  }
}

const plainToB = async (id: string, password: string): Promise<void> =>
  end(await connect(b.urls.tcp as string, { clientId: id, username: id, password }));

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-registry-scram-"));
  redis = await RedisServer.start();
  const prefix = `s${randomBytes(4).toString("hex")}:`;
  a = await clusterNode("scram-a", prefix);
  b = await clusterNode("scram-b", prefix);
});
after(async () => {
  await a?.stop();
  await b?.stop();
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("device registry: SCRAM-SHA-256 verifiers", () => {
  it("a device created with scram: true authenticates with SCRAM and with its password", async () => {
    const created = await callA("POST", "/api/v1/devices", { id: "rtu-1", scram: true });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.json.device.scram, true);
    assert.equal(created.json.device.hasPassword, true);
    const password = created.json.password as string;
    assert.equal(await scramToB("rtu-1", password), 0);
    await plainToB("rtu-1", password);
    assert.equal(await scramToB("rtu-1", `${password}x`), 0x86);
    // Rotation keeps the format: the new password works over SCRAM, the old one no more.
    const rotated = await rotateSeenByB("rtu-1", password, () =>
      callA("POST", "/api/v1/devices/rtu-1/rotate"),
    );
    assert.equal(rotated.status, 200, rotated.text);
    assert.equal(await scramToB("rtu-1", rotated.json.password), 0);
    assert.equal(await scramToB("rtu-1", password), 0x86);
    assert.equal((await callA("GET", "/api/v1/devices/rtu-1")).json.scram, true);
  });

  it("a device created by default (scrypt) cannot use SCRAM until rotated with scram: true", async () => {
    const created = await callA("POST", "/api/v1/devices", { id: "rtu-2" });
    assert.equal(created.json.device.scram, false);
    assert.equal(await scramToB("rtu-2", created.json.password), 0x86);
    const rotated = await rotateSeenByB("rtu-2", created.json.password, () =>
      callA("POST", "/api/v1/devices/rtu-2/rotate", { scram: true }),
    );
    assert.equal(rotated.status, 200, rotated.text);
    assert.equal(await scramToB("rtu-2", rotated.json.password), 0);
    const back = await rotateSeenByB("rtu-2", rotated.json.password, () =>
      callA("POST", "/api/v1/devices/rtu-2/rotate", { scram: false }),
    );
    assert.equal(await scramToB("rtu-2", back.json.password), 0x86);
    await plainToB("rtu-2", back.json.password);
  });

  it("the CLI stores a verifier made elsewhere: the registry never sees the password", async () => {
    const env = { SLUICE_ADMIN_URL: apiOf(a), SLUICE_ADMIN_TOKEN: admin.token };
    // A line as `sluice passwd --scram FILE rtu-3` writes it.
    const file = join(dir, "rtu-3.passwd");
    await writeFile(file, `rtu-3:${await hashPasswordScram("field-secret")}\n`, { mode: 0o600 });
    const added = await runCli(["device", "add", "rtu-3", "--scram-verifier-file", file], env);
    assert.equal(added.code, 0, added.stderr);
    const shown = JSON.parse(added.stdout) as { password?: string; device: { scram: boolean } };
    assert.equal(shown.password, undefined, "no password was generated");
    assert.equal(shown.device.scram, true);
    assert.equal(await scramToB("rtu-3", "field-secret"), 0);
    await plainToB("rtu-3", "field-secret");

    await writeFile(file, `${await hashPasswordScram("field-secret-2")}\n`);
    const rotated = await rotateSeenByB("rtu-3", "field-secret", () =>
      runCli(["device", "rotate", "rtu-3", "--scram-verifier-file", file], env),
    );
    assert.equal(rotated.code, 0, rotated.stderr);
    assert.equal((JSON.parse(rotated.stdout) as { password?: string }).password, undefined);
    assert.equal(await scramToB("rtu-3", "field-secret-2"), 0);
    assert.equal(await scramToB("rtu-3", "field-secret"), 0x86);

    const generated = await runCli(["device", "add", "rtu-4", "--scram"], env);
    assert.equal(generated.code, 0, generated.stderr);
    const { password } = JSON.parse(generated.stdout) as { password: string };
    assert.equal(await scramToB("rtu-4", password), 0);
  });

  it("refuses a malformed verifier and contradictory choices with 400, naming why", async () => {
    const bad = await callA("POST", "/api/v1/devices", {
      id: "rtu-5",
      scramVerifier: "$scrypt$ln=14,r=8,p=1$c2FsdA==$a2V5a2V5a2V5a2V5a2V5a2V5",
    });
    assert.equal(bad.status, 400);
    assert.match(bad.text, /scramVerifier.*malformed SCRAM-SHA-256 verifier/);
    const certificateOnly = await callA("POST", "/api/v1/devices", {
      id: "rtu-5",
      password: false,
      scram: true,
    });
    assert.equal(certificateOnly.status, 400);
    assert.match(certificateOnly.text, /certificate-only/);
    const contradiction = await callA("POST", "/api/v1/devices/rtu-1/rotate", {
      scram: false,
      scramVerifier: await hashPasswordScram("x"),
    });
    assert.equal(contradiction.status, 400);
    assert.equal((await callA("GET", "/api/v1/devices/rtu-5")).status, 404);
  });

  it("the OpenAPI document describes the new fields", async () => {
    const document = (await callApi(apiOf(a), "GET", "/openapi.json")).json;
    const create = document.paths["/api/v1/devices"].post.requestBody.content["application/json"];
    assert.ok(create.schema.properties.scram);
    assert.ok(create.schema.properties.scramVerifier);
    const rotate = document.paths["/api/v1/devices/{id}/rotate"].post;
    assert.ok(rotate.requestBody.content["application/json"].schema.properties.scramVerifier);
  });
});
