import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import {
  adminCaller,
  adminUrlOf,
  callApi,
  newAdminToken,
  startRegistryNode,
} from "../../harness/admin-api.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { closedAfter, connect, end, type MqttClient } from "../../harness/mqtt-client.js";
import { RedisServer } from "../../harness/redis-server.js";
import { runCli } from "../../harness/sluice-process.js";

/**
 * Two nodes over one real Redis, each with the admin API: a device made through one node
 * connects through the other, and revocations made on one close connections on the other.
 */
const admin = newAdminToken();
let redis: RedisServer;
let a: RunningNode;
let b: RunningNode;

const clusterNode = (nodeId: string, prefix: string) =>
  startRegistryNode(nodeId, redis.url, prefix, admin.digest);
const apiOf = adminUrlOf;
const callA = adminCaller(() => a, admin.token);

before(async () => {
  redis = await RedisServer.start();
  const prefix = `r${randomBytes(4).toString("hex")}:`;
  a = await clusterNode("reg-a", prefix);
  b = await clusterNode("reg-b", prefix);
});
after(async () => {
  await a?.stop();
  await b?.stop();
  await redis?.stop();
});

async function createOnA(id: string): Promise<string> {
  const created = await callA("POST", "/api/v1/devices", { id });
  assert.equal(created.status, 201, created.text);
  return created.json.password as string;
}

const connectToB = (id: string, password: string): Promise<MqttClient> =>
  connect(b.urls.tcp as string, { clientId: id, username: id, password });

describe("device registry across two nodes", () => {
  it("a device created on one node connects through the other; disabling it there closes it within 1 s", async () => {
    const password = await createOnA("plc-x1");
    const client = await connectToB("plc-x1", password);
    const started = Date.now();
    assert.equal((await callA("PATCH", "/api/v1/devices/plc-x1", { enabled: false })).status, 200);
    const ms = await closedAfter(client, started);
    process.stdout.write(`# disable on node A closed the connection on node B after ${ms} ms\n`);
    assert.ok(ms < 1_000, `closed after ${ms} ms`);
    await end(client);
    // Node B had the device cached as enabled: the change message emptied that.
    await assert.rejects(connectToB("plc-x1", password), /Not authorized/);
  });

  it("rotating on one node refuses the old password on the other at once", async () => {
    const old = await createOnA("plc-x2");
    const client = await connectToB("plc-x2", old);
    const started = Date.now();
    const rotated = await callA("POST", "/api/v1/devices/plc-x2/rotate");
    assert.equal(rotated.status, 200);
    assert.ok((await closedAfter(client, started)) < 1_000);
    await end(client);
    await assert.rejects(connectToB("plc-x2", old), /Bad username or password|Not authorized/);
    await end(await connectToB("plc-x2", rotated.json.password));
  });

  it("lists sessions cluster-wide and disconnects a client held by the other node", async () => {
    const password = await createOnA("plc-x3");
    const client = await connectToB("plc-x3", password);
    const listed = await callA("GET", "/api/v1/sessions");
    const entry = listed.json.sessions.find((s: { clientId: string }) => s.clientId === "plc-x3");
    assert.equal(entry?.node, "reg-b");
    assert.equal(typeof entry?.connectedAt, "string");
    const started = Date.now();
    assert.equal((await callA("DELETE", "/api/v1/sessions/plc-x3")).status, 204);
    assert.ok((await closedAfter(client, started)) < 1_000);
    await end(client);
    // Node B lets go of the client id in Redis as the connection closes, a moment after the
    // client sees it closed: gone from the listing within moments (5 s allowed), then not found.
    const deadline = Date.now() + 5_000;
    for (;;) {
      const { json } = await callA("GET", "/api/v1/sessions");
      if (!json.sessions.some((s: { clientId: string }) => s.clientId === "plc-x3")) break;
      assert.ok(Date.now() < deadline, "plc-x3 still listed 5 s after its connection closed");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.equal((await callA("DELETE", "/api/v1/sessions/plc-x3")).status, 404);
  });

  it("the CLI adds, disables and removes a device through a node's API", async () => {
    const env = { SLUICE_ADMIN_URL: apiOf(a), SLUICE_ADMIN_TOKEN: admin.token };
    const added = await runCli(["device", "add", "plc-cli", "--group", "pumps"], env);
    assert.equal(added.code, 0, added.stderr);
    const { password } = JSON.parse(added.stdout) as { password: string };
    await end(await connectToB("plc-cli", password));
    const disabled = await runCli(["device", "disable", "plc-cli"], env);
    assert.equal(disabled.code, 0, disabled.stderr);
    await assert.rejects(connectToB("plc-cli", password), /Not authorized/);
    const duplicate = await runCli(["device", "add", "plc-cli"], env);
    assert.equal(duplicate.code, 2);
    assert.match(duplicate.stderr, /409/);
    const noToken = await runCli(["device", "list"], { SLUICE_ADMIN_URL: apiOf(a) });
    assert.equal(noToken.code, 2);
    assert.match(noToken.stderr, /SLUICE_ADMIN_TOKEN/);
    assert.equal((await runCli(["device", "rm", "plc-cli"], env)).code, 0);
    assert.equal((await callA("GET", "/api/v1/devices/plc-cli")).status, 404);
  });
});

describe("admin calls without a credential across two nodes", () => {
  it("share one per-address budget in Redis: spreading them over the nodes gains nothing", async () => {
    const prefix = `u${randomBytes(4).toString("hex")}:`;
    const limited = (nodeId: string) =>
      startNode({
        nodeId,
        auth: { allowAnonymous: false },
        redis: { url: redis.url, keyPrefix: prefix },
        admin: {
          host: "127.0.0.1",
          port: 0,
          tokens: [admin.digest],
          unauthenticatedRequestsPerMinute: 3,
        },
      });
    const first = await limited("unauth-a");
    const second = await limited("unauth-b").catch(async (error: unknown) => {
      await first.stop();
      throw error;
    });
    try {
      const statuses: number[] = [];
      for (const node of [first, first, second, second, first]) {
        statuses.push((await callApi(apiOf(node), "GET", "/openapi.json")).status);
      }
      assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
    } finally {
      await first.stop();
      await second.stop();
    }
  });
});
