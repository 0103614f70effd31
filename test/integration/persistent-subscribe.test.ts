import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import {
  connect,
  connectWithConnack,
  end,
  Inbox,
  subscribeGranted,
} from "../../harness/mqtt-client.js";
import { RedisServer } from "../../harness/redis-server.js";
import { PersistenceKeys } from "../../src/redis/redis-keys.js";

/**
 * One SUBSCRIBE with several filters from a persistent session on a Redis-backed node: aedes
 * stored the packet's whole filter list once per filter and the persistence waited for the same
 * broadcast echo each time, so the SUBACK never came; and filters the ACL refused were stored.
 */
let dir: string;
let redis: RedisServer;
let node: RunningNode;
let prefix: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-multisub-"));
  await writeFile(join(dir, "acl.conf"), "topic readwrite plant/#\n");
  redis = await RedisServer.start();
  prefix = `m${randomBytes(4).toString("hex")}:`;
  node = await startNode(
    { redis: { url: redis.url, keyPrefix: prefix }, acl: { file: "acl.conf" } },
    dir,
  );
});
after(async () => {
  await node?.stop();
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("a persistent session's SUBSCRIBE with several filters (Redis)", () => {
  it("is acknowledged, stores only the granted filters, and they all survive a resume", async () => {
    const url = node.urls.tcp as string;
    const first = await connect(url, { clientId: "multi-1", clean: false });
    const granted = await subscribeGranted(first, {
      "plant/a/#": { qos: 1 },
      "plant/b/#": { qos: 1 },
      "secret/#": { qos: 1 },
      "plant/c": { qos: 0 },
    });
    assert.deepEqual(granted, [1, 1, 128, 0]);
    await end(first);

    const subscriptions = new PersistenceKeys(prefix).subscriptions("multi-1");
    const lines = await redis.reply("HKEYS", `${prefix}${subscriptions}`);
    const stored = lines.filter((line) => !/^[*$]/.test(line)).sort();
    assert.deepEqual(
      stored,
      ["plant/a/#", "plant/b/#", "plant/c"],
      "the refused filter is not stored",
    );

    const publisher = await connect(url);
    for (const topic of ["plant/a/1", "plant/b/1"]) {
      await publisher.publishAsync(topic, topic, { qos: 1 });
    }
    await end(publisher);
    const { client, inbox, sessionPresent } = await connectWithConnack(url, {
      clientId: "multi-1",
      clean: false,
    });
    try {
      assert.equal(sessionPresent, true);
      const queued = await inbox.waitFor(2);
      assert.deepEqual(queued.map((m) => m.topic).sort(), ["plant/a/1", "plant/b/1"]);
      const live = new Inbox(client);
      const sender = await connect(url);
      // QoS 1 from the sender: its PUBACK proves the broker has it before the sender goes.
      await sender.publishAsync("plant/c", "live", { qos: 1 });
      await end(sender);
      assert.equal((await live.waitFor(1))[0]?.topic, "plant/c");
    } finally {
      await end(client);
    }
  });
});
