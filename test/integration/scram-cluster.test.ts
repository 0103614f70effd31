import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { IAuthPacket } from "mqtt-packet";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { rawConnect } from "../../harness/raw-socket.js";
import { RedisServer } from "../../harness/redis-server.js";
import { ScramClient } from "../../harness/scram-client.js";
import { WireClient } from "../../harness/wire-client.js";
import { hashPasswordScram } from "../../src/security/password-hash.js";

/**
 * An unknown user's made-up SCRAM salt is the same on every node of a cluster (the secret it
 * comes from is the cluster's, in Redis), so comparing nodes does not tell which users exist.
 */
const METHOD = "SCRAM-SHA-256";

/** The server-first message a node answers a client-first for `username` with. */
async function serverFirst(node: RunningNode, username: string): Promise<string> {
  const wire = new WireClient(await rawConnect(Number(new URL(node.urls.tcp as string).port)), 5);
  try {
    wire.send({
      cmd: "connect",
      protocolVersion: 5,
      clientId: `probe-${randomBytes(3).toString("hex")}`,
      keepalive: 60,
      clean: true,
      properties: {
        authenticationMethod: METHOD,
        authenticationData: new ScramClient(username, "guess").clientFirst,
      },
    });
    const challenge = (await wire.waitFor("AUTH", (p) => p.cmd === "auth")) as IAuthPacket;
    return String(challenge.properties?.authenticationData);
  } finally {
    wire.stream.destroy();
  }
}

function saltOf(message: string): string {
  const salt = /(?:^|,)s=([^,]+)/.exec(message)?.[1];
  assert.ok(salt !== undefined, message);
  return salt;
}

describe("SCRAM-SHA-256 across a cluster", () => {
  let dir: string;
  let redis: RedisServer;
  const nodes: RunningNode[] = [];
  const keyPrefix = `scram${randomBytes(3).toString("hex")}:`;
  const start = (nodeId: string) =>
    startNode(
      {
        nodeId,
        redis: { url: redis.url, keyPrefix },
        auth: { allowAnonymous: false, passwordFile: "passwd" },
      },
      dir,
    );

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sluice-scram-cluster-"));
    await writeFile(join(dir, "passwd"), `plc-1:${await hashPasswordScram("pencil")}\n`);
    redis = await RedisServer.start();
    nodes.push(await start("node-a"), await start("node-b"));
  });
  after(async () => {
    for (const node of nodes) await node.stop();
    await redis?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("two nodes, and a node started later, answer an unknown user with the same salt", async () => {
    const [a, b] = nodes as [RunningNode, RunningNode];
    const fromA = saltOf(await serverFirst(a, "ghost"));
    assert.equal(saltOf(await serverFirst(b, "ghost")), fromA);
    assert.equal(saltOf(await serverFirst(a, "ghost")), fromA, "stable on one node too");
    const late = await start("node-c");
    nodes.push(late);
    assert.equal(saltOf(await serverFirst(late, "ghost")), fromA);
    // Made up per user: another unknown user gets another salt, a real user its own.
    assert.notEqual(saltOf(await serverFirst(b, "phantom")), fromA);
    assert.notEqual(saltOf(await serverFirst(b, "plc-1")), fromA);
  });
});
