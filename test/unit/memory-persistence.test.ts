import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { drain, storedPublish as publish } from "../../harness/stored-packets.js";
import { MemoryPersistence, type StoredPacket } from "../../src/engine/memory-persistence.js";

const client = { id: "plc-1" };
function store(maxQueuedPerClient = 100) {
  const drops: Array<[string, number]> = [];
  const persistence = new MemoryPersistence({
    maxQueuedPerClient,
    onQueueFull: (clientId, dropped) => drops.push([clientId, dropped]),
  });
  return { persistence, drops };
}

/** Messages m1..m`count` queued for the client and sent (ids 1..count), none acknowledged. */
async function sentAndQueued(persistence: MemoryPersistence, count: number): Promise<void> {
  const packets = Array.from({ length: count }, (_, i) => publish("t", `m${i + 1}`));
  for (const packet of packets) await persistence.outgoingEnqueue({ clientId: client.id }, packet);
  for (const [i, packet] of packets.entries())
    await persistence.outgoingUpdate(client, { ...packet, messageId: i + 1 });
}

/** What a resume sends, in order: `pubrel <id>` or the payload. */
async function resendOrder(persistence: MemoryPersistence): Promise<Array<string | undefined>> {
  return (await persistence.outgoingPackets(client)).map((p) =>
    p.cmd === "pubrel" ? `pubrel ${p.messageId}` : p.payload?.toString(),
  );
}

describe("memory persistence", () => {
  it("retained: `+` matches an empty level, each message once over overlapping filters", async () => {
    const { persistence } = store();
    await persistence.storeRetained({ ...publish("a/"), retain: true });
    await persistence.storeRetained({ ...publish("a/b"), retain: true });
    await persistence.storeRetained({ ...publish("b/c"), retain: true });
    const matched = await drain(persistence.createRetainedStreamCombi(["a/+", "a/#"]));
    assert.deepEqual(matched.map((p) => p.topic).sort(), ["a/", "a/b"]);
    await persistence.storeRetained({ ...publish("a/", ""), retain: true });
    const after = await drain(persistence.createRetainedStream("a/+"));
    assert.deepEqual(
      after.map((p) => p.topic),
      ["a/b"],
      "an empty payload clears",
    );
  });

  it("retained: exact filters naming no retained topic get nothing; a retained one among them is found", async () => {
    const { persistence } = store();
    const nothing = persistence.createRetainedStreamCombi(["plc/1/cmd"]);
    assert.deepEqual(await drain(nothing), []);
    await persistence.storeRetained({ ...publish("plant/state"), retain: true });
    const exact = persistence.createRetainedStreamCombi(["plc/1/cmd", "plc/2/cmd"]);
    assert.deepEqual(await drain(exact), []);
    assert.deepEqual(
      (await drain(persistence.createRetainedStreamCombi(["plant/state", "plc/1/cmd"]))).map(
        (p) => p.topic,
      ),
      ["plant/state"],
    );
    assert.deepEqual(
      (await drain(persistence.createRetainedStreamCombi(["plant/#"]))).map((p) => p.topic),
      ["plant/state"],
    );
  });

  it("offline queueing: a QoS 1 subscription to `a/+` is found for topic `a/`", async () => {
    const { persistence } = store();
    await persistence.addSubscriptions(client, [{ topic: "a/+", qos: 1 }]);
    const found = await persistence.subscriptionsByTopic("a/");
    assert.deepEqual(
      found.map((s) => s.clientId),
      ["plc-1"],
    );
    await persistence.removeSubscriptions(client, ["a/+"]);
    assert.deepEqual(await persistence.subscriptionsByTopic("a/"), []);
    assert.deepEqual(await persistence.countOffline(), { subsCount: 0, clientsCount: 0 });
  });

  it("a shared delivery's PUBREC puts its PUBREL in the session's queue until PUBCOMP [MQTT-4.4.0-1]", async () => {
    const { persistence } = store();
    await persistence.outgoingEnqueue({ clientId: client.id }, publish("t", "queued"));
    const shared = { ...publish("t", "shared"), brokerId: "$share/b1", messageId: 9 };
    await persistence.outgoingUpdate(client, shared);
    const queued = async () =>
      (await persistence.outgoingPackets(client)).map((p) =>
        p.cmd === "pubrel" ? `pubrel ${p.messageId}` : p.payload?.toString(),
      );
    assert.deepEqual(await queued(), ["queued"], "the shared delivery itself is not queued");
    await persistence.outgoingUpdate(client, { cmd: "pubrel", messageId: 9 } as StoredPacket);
    assert.deepEqual(await queued(), ["pubrel 9", "queued"], "PUBRELs first [MQTT-4.6.0-4]");
    await persistence.outgoingClearMessageId(client, { messageId: 9 });
    assert.deepEqual(await queued(), ["queued"]);
    // A PUBACK of a shared QoS 1 delivery forgets it: a later PUBREL of that id adds nothing.
    await persistence.outgoingUpdate(client, { ...shared, messageId: 10 });
    await persistence.outgoingClearMessageId(client, { messageId: 10 });
    await persistence.outgoingUpdate(client, { cmd: "pubrel", messageId: 10 } as StoredPacket);
    assert.deepEqual(await queued(), ["queued"]);
  });

  it("a resume sends the stored PUBRELs first, then the PUBLISHes, each in order [MQTT-4.6.0-4]", async () => {
    const { persistence } = store();
    await sentAndQueued(persistence, 4);
    // PUBRECs for m2 and m3: their PUBRELs answer PUBRECs a resent PUBLISH's cannot precede.
    for (const messageId of [2, 3])
      await persistence.outgoingUpdate(client, { cmd: "pubrel", messageId } as StoredPacket);
    const resent = await resendOrder(persistence);
    assert.deepEqual(resent, ["pubrel 2", "pubrel 3", "m1", "m4"]);
  });

  it("stored PUBRELs go out in the order their PUBRECs came, not their PUBLISHes' [MQTT-4.6.0-4]", async () => {
    const { persistence } = store();
    await sentAndQueued(persistence, 4);
    // As the Redis persistence keeps them (pubrel-4.lua moves each to the end of the queue).
    // The PUBREC of m3 twice: the stored PUBREL stays where the first put it.
    for (const messageId of [3, 1, 3])
      await persistence.outgoingUpdate(client, { cmd: "pubrel", messageId } as StoredPacket);
    const resent = await resendOrder(persistence);
    assert.deepEqual(resent, ["pubrel 3", "pubrel 1", "m2", "m4"]);
  });

  it("a resume walks a copy of the queue: acknowledgements during the walk skip nothing", async () => {
    const { persistence } = store();
    await sentAndQueued(persistence, 3);
    const walked: string[] = [];
    // No PUBREL: the order is the queue's, and still a copy of it (inResendOrder).
    for (const packet of await persistence.outgoingPackets(client)) {
      walked.push(packet.payload?.toString() ?? "");
      await persistence.outgoingClearMessageId(client, { messageId: packet.messageId as number });
    }
    assert.deepEqual(walked, ["m1", "m2", "m3"]);
    assert.deepEqual(await persistence.outgoingPackets(client), []);
  });

  it("a queue over its cap drops its oldest messages, keeps PUBRELs, and reports the drop", async () => {
    const { persistence, drops } = store(3);
    const pubrel = { ...publish("t"), cmd: "pubrel", messageId: 7 } as StoredPacket;
    await persistence.outgoingEnqueue({ clientId: client.id }, pubrel);
    for (const n of [1, 2, 3, 4])
      await persistence.outgoingEnqueue({ clientId: client.id }, publish("t", `m${n}`));
    const queued = await drain(persistence.outgoingStream(client));
    assert.deepEqual(
      queued.map((p) => (p.cmd === "pubrel" ? "pubrel" : p.payload?.toString())),
      ["pubrel", "m3", "m4"],
    );
    assert.deepEqual(drops, [
      ["plc-1", 1],
      ["plc-1", 1],
    ]);
  });

  it("a delivery's packet id is recorded, and its acknowledgement clears it", async () => {
    const { persistence } = store();
    const packet = publish("t");
    await persistence.outgoingEnqueue({ clientId: client.id }, packet);
    await persistence.outgoingUpdate(client, { ...packet, messageId: 42 });
    const cleared = await persistence.outgoingClearMessageId(client, { messageId: 42 });
    assert.equal(cleared?.brokerCounter, packet.brokerCounter);
    assert.deepEqual(await drain(persistence.outgoingStream(client)), []);
    // A message the cap dropped is acknowledged without an error.
    await persistence.outgoingUpdate(client, { ...publish("t"), messageId: 9 });
    assert.equal(await persistence.outgoingClearMessageId(client, { messageId: 9 }), undefined);
  });

  it("a delivery refused before it got a packet id clears its own message, not another", async () => {
    const { persistence } = store();
    const refused = publish("acl/denied", "refused");
    const waiting = publish("acl/allowed", "waiting");
    await persistence.outgoingEnqueue({ clientId: client.id }, waiting);
    await persistence.outgoingEnqueue({ clientId: client.id }, refused);
    const cleared = await persistence.outgoingClearMessageId(client, { ...refused });
    assert.equal(cleared?.topic, "acl/denied");
    const left = await drain(persistence.outgoingStream(client));
    assert.deepEqual(
      left.map((p) => p.topic),
      ["acl/allowed"],
    );
  });

  it("QoS 2 inbound state: stored, read, deleted, and gone with a clean session", async () => {
    const { persistence } = store();
    await persistence.incomingStorePacket(client, { ...publish("t", "x", 2), messageId: 5 });
    assert.equal(
      (await persistence.incomingGetPacket(client, { messageId: 5 } as StoredPacket)).topic,
      "t",
    );
    await persistence.incomingDelPacket(client, { messageId: 5 } as StoredPacket);
    await assert.rejects(
      persistence.incomingGetPacket(client, { messageId: 5 } as StoredPacket),
      /no such packet/,
    );
    await persistence.incomingStorePacket(client, { ...publish("t", "x", 2), messageId: 6 });
    await persistence.cleanIncoming(client);
    await assert.rejects(
      persistence.incomingDelPacket(client, { messageId: 6 } as StoredPacket),
      /no such packet/,
    );
  });

  it("wills of dead brokers only are streamed", async () => {
    const { persistence } = store();
    await persistence.setup({ id: "node-a" });
    await persistence.putWill({ id: "c1" }, publish("will/c1"));
    assert.equal((await drain(persistence.streamWill({ "node-a": Date.now() }))).length, 0);
    assert.deepEqual(
      (await drain(persistence.streamWill({}))).map((w) => w.clientId),
      ["c1"],
    );
    await persistence.destroy();
    await assert.rejects(persistence.destroy(), /twice/);
  });
});
