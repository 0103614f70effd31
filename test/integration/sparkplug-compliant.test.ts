import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, end, Inbox } from "../../harness/mqtt-client.js";
import { dropConnection } from "../../harness/mqtt5-session.js";

/**
 * The Sparkplug 3.0 "MQTT Server" conformance section, one test per requirement, on Sparkplug
 * topics, over MQTT 3.1.1 and 5 (Sparkplug clients use both). The Aware requirements are
 * covered by sparkplug.test.ts.
 */
let node: RunningNode;
let url: string;

before(async () => {
  node = await startNode();
  url = node.urls.tcp as string;
});
after(async () => {
  await node?.stop();
});

for (const protocolVersion of [4, 5] as const) {
  describe(`Sparkplug Compliant, MQTT ${protocolVersion === 4 ? "3.1.1" : "5"}`, () => {
    const group = `G${protocolVersion}`;

    for (const qos of [0, 1] as const) {
      it(`tck-id-conformance-mqtt-qos${qos}: publish and subscribe at QoS ${qos}`, async () => {
        const host = await connect(url, { protocolVersion, clientId: `host-q${qos}-${group}` });
        const edge = await connect(url, { protocolVersion, clientId: `edge-q${qos}-${group}` });
        try {
          const inbox = new Inbox(host);
          const [granted] = await host.subscribeAsync(`spBv1.0/${group}/+/e${qos}`, { qos });
          assert.equal(granted?.qos, qos);
          await edge.publishAsync(`spBv1.0/${group}/NDATA/e${qos}`, "data", { qos });
          const [message] = await withDeadline(inbox.waitFor(1), 5_000, "the message");
          assert.equal(message?.packet.qos, qos);
          assert.equal(message?.payload.toString(), "data");
        } finally {
          await end(host, edge);
        }
      });
    }

    it("tck-id-conformance-mqtt-will-messages: a will with retain and QoS 1 (a host's death STATE)", async () => {
      const topic = `spBv1.0/STATE/host-${group}`;
      const watcher = await connect(url, { protocolVersion, clientId: `watch-${group}` });
      const inbox = new Inbox(watcher);
      await watcher.subscribeAsync(topic, { qos: 1 });
      const dying = await connect(url, {
        protocolVersion,
        clientId: `dying-${group}`,
        will: { topic, payload: Buffer.from('{"online":false}'), qos: 1, retain: true },
      });
      const late = await connect(url, { protocolVersion, clientId: `late-${group}` });
      try {
        await dropConnection(dying);
        const [will] = await withDeadline(inbox.waitFor(1), 5_000, "the will");
        assert.equal(will?.packet.qos, 1);
        assert.equal(will?.payload.toString(), '{"online":false}');
        // Retained: a subscriber that comes later gets it too, flagged as retained.
        const lateInbox = new Inbox(late);
        await late.subscribeAsync(topic, { qos: 1 });
        const [kept] = await withDeadline(lateInbox.waitFor(1), 5_000, "the retained will");
        assert.equal(kept?.packet.retain, true);
        assert.equal(kept?.packet.qos, 1);
      } finally {
        await end(watcher, late);
      }
    });

    it("tck-id-conformance-mqtt-retained: kept, flagged to late subscribers only, replaced and cleared", async () => {
      const topic = `spBv1.0/STATE/retained-${group}`;
      const publisher = await connect(url, { protocolVersion, clientId: `pub-${group}` });
      const live = await connect(url, { protocolVersion, clientId: `live-${group}` });
      const liveInbox = new Inbox(live);
      await live.subscribeAsync(topic, { qos: 1 });
      try {
        await publisher.publishAsync(topic, "first", { qos: 1, retain: true });
        await publisher.publishAsync(topic, "second", { qos: 1, retain: true });
        const delivered = await withDeadline(liveInbox.waitFor(2), 5_000, "live copies");
        // [MQTT-3.3.1-9] a live copy does not carry the retain flag (MQTT 5: Retain As
        // Published is 0 by default, so the same holds).
        assert.deepEqual(
          delivered.map((m) => m.packet.retain),
          [false, false],
        );
        const late = await connect(url, { protocolVersion, clientId: `late-r-${group}` });
        const lateInbox = new Inbox(late);
        await late.subscribeAsync(topic, { qos: 1 });
        const [kept] = await withDeadline(lateInbox.waitFor(1), 5_000, "the retained message");
        assert.equal(kept?.payload.toString(), "second", "the latest replaces the one before");
        assert.equal(kept?.packet.retain, true);
        await end(late);
        // An empty retained message clears it [MQTT-3.3.1-10]: a new subscriber gets nothing,
        // then the marker it waits for.
        await publisher.publishAsync(topic, "", { qos: 1, retain: true });
        const after = await connect(url, { protocolVersion, clientId: `after-${group}` });
        const afterInbox = new Inbox(after);
        await after.subscribeAsync(topic, { qos: 1 });
        await publisher.publishAsync(topic, "marker", { qos: 1 });
        const [first] = await withDeadline(afterInbox.waitFor(1), 5_000, "the marker");
        assert.equal(first?.payload.toString(), "marker");
        await end(after);
      } finally {
        await end(publisher, live);
      }
    });
  });
}
