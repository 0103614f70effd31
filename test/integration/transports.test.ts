import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { IClientOptions } from "mqtt";
import { createTestPki, secureListener, type TestPki } from "../../harness/certs.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, connectWithConnack, end, Inbox, subscribe } from "../../harness/mqtt-client.js";

/** One shared suite, run over every transport: the MQTT behaviour must not depend on it. */
const TRANSPORTS = ["tcp", "tls", "ws", "wss"] as const;

let pki: TestPki;
before(async () => {
  pki = await createTestPki();
});
after(async () => {
  await pki.cleanup();
});

let sequence = 0;
const unique = (prefix: string): string => `${prefix}-${process.pid}-${++sequence}`;

for (const transport of TRANSPORTS) {
  describe(`${transport} transport`, () => {
    let running: RunningNode;
    let url: string;
    let tlsOptions: IClientOptions;

    before(async () => {
      const secure = transport === "tls" || transport === "wss";
      const listener = secure
        ? secureListener(pki, transport)
        : { type: transport, host: "127.0.0.1", port: 0 };
      running = await startNode({ listeners: [listener] });
      url = running.urls[transport] as string;
      tlsOptions = secure ? { ca: pki.read(pki.caCert), rejectUnauthorized: true } : {};
    });
    after(async () => {
      await running.stop();
    });

    const open = (options: IClientOptions = {}) => connect(url, { ...tlsOptions, ...options });

    it("delivers QoS 0, 1 and 2 at the lower of the published and granted QoS", async () => {
      const topic = unique("qos");
      const subscriber = await open();
      const publisher = await open();
      try {
        const inbox = new Inbox(subscriber);
        assert.equal(await subscribe(subscriber, `${topic}/#`, 2), 2);
        await publisher.publishAsync(`${topic}/0`, "zero", { qos: 0 });
        await publisher.publishAsync(`${topic}/1`, "one", { qos: 1 });
        await publisher.publishAsync(`${topic}/2`, "two", { qos: 2 });
        const messages = await inbox.waitFor(3);
        const byTopic = new Map(messages.map((m) => [m.topic, m]));
        assert.equal(byTopic.get(`${topic}/0`)?.payload.toString(), "zero");
        assert.equal(byTopic.get(`${topic}/0`)?.packet.qos, 0);
        assert.equal(byTopic.get(`${topic}/1`)?.packet.qos, 1);
        assert.equal(byTopic.get(`${topic}/2`)?.packet.qos, 2);
        assert.equal(byTopic.get(`${topic}/2`)?.payload.toString(), "two");
        for (const m of messages)
          assert.equal(m.packet.retain, false, "a live message is not flagged retained");
      } finally {
        await end(subscriber, publisher);
      }
    });

    it("keeps, replaces and clears a retained message", async () => {
      const topic = unique("retained");
      const publisher = await open();
      try {
        await publisher.publishAsync(`${topic}/a`, "first", { qos: 1, retain: true });
        await publisher.publishAsync(`${topic}/a`, "second", { qos: 1, retain: true });
        await publisher.publishAsync(`${topic}/b`, "kept", { qos: 1, retain: true });
        await publisher.publishAsync(`${topic}/c`, "gone", { qos: 1, retain: true });
        // An empty retained payload clears the topic [MQTT-3.3.1-10].
        await publisher.publishAsync(`${topic}/c`, "", { qos: 1, retain: true });

        const late = await open();
        try {
          const inbox = new Inbox(late);
          // One SUBSCRIBE, filters in order: a retained message for `c` would arrive before `b`'s.
          await late.subscribeAsync([`${topic}/a`, `${topic}/c`, `${topic}/b`], { qos: 1 });
          const [a, b] = await inbox.waitFor(2);
          assert.equal(a?.topic, `${topic}/a`);
          assert.equal(a?.payload.toString(), "second");
          assert.equal(a?.packet.retain, true, "sent because of a new subscription [MQTT-3.3.1-8]");
          assert.equal(b?.topic, `${topic}/b`, "the cleared topic delivers nothing");
          assert.equal(b?.payload.toString(), "kept");
        } finally {
          await end(late);
        }
      } finally {
        await end(publisher);
      }
    });

    it("publishes the will when a client's connection drops without DISCONNECT", async () => {
      const topic = unique("will");
      const watcher = await open();
      const device = await open({
        will: { topic, payload: Buffer.from("offline"), qos: 1, retain: false },
      });
      try {
        const inbox = new Inbox(watcher);
        await subscribe(watcher, topic, 1);
        device.stream.destroy();
        const [will] = await inbox.waitFor(1);
        assert.equal(will?.topic, topic);
        assert.equal(will?.payload.toString(), "offline");
      } finally {
        await end(watcher, device);
      }
    });

    it("does not publish the will after a clean DISCONNECT", async () => {
      const topic = unique("no-will");
      const watcher = await open();
      const device = await open({
        will: { topic, payload: Buffer.from("offline"), qos: 1, retain: false },
      });
      try {
        const inbox = new Inbox(watcher);
        await subscribe(watcher, `${topic}/#`, 1);
        await subscribe(watcher, topic, 1);
        await device.endAsync();
        // A marker published after the DISCONNECT: had the will gone out, it would come first.
        const marker = await open();
        await marker.publishAsync(`${topic}/marker`, "after", { qos: 1 });
        await end(marker);
        const [first] = await inbox.waitFor(1);
        assert.equal(first?.topic, `${topic}/marker`);
      } finally {
        await end(watcher, device);
      }
    });

    it("queues QoS 1 messages for a persistent session and delivers them on return", async () => {
      const topic = unique("session");
      const clientId = unique("persistent");
      const first = await open({ clientId, clean: false });
      await subscribe(first, topic, 1);
      await first.endAsync();

      const publisher = await open();
      for (const n of [1, 2, 3]) await publisher.publishAsync(topic, `m${n}`, { qos: 1 });
      await end(publisher);

      const { client, inbox, sessionPresent } = await connectWithConnack(url, {
        ...tlsOptions,
        clientId,
        clean: false,
      });
      try {
        assert.equal(sessionPresent, true, "[MQTT-3.2.2-2]");
        const messages = await inbox.waitFor(3);
        assert.deepEqual(
          messages.map((m) => m.payload.toString()),
          ["m1", "m2", "m3"],
        );
      } finally {
        await end(client);
      }
    });

    it("lets a second connection with the same client id take over the first", async () => {
      const clientId = unique("takeover");
      const first = await open({ clientId });
      const closed = new Promise<void>((resolve) => first.once("close", () => resolve()));
      const second = await open({ clientId });
      try {
        await closed;
        assert.equal(first.connected, false);
        const topic = unique("after-takeover");
        const inbox = new Inbox(second);
        await subscribe(second, topic, 1);
        await second.publishAsync(topic, "still here", { qos: 1 });
        const [message] = await inbox.waitFor(1);
        assert.equal(message?.payload.toString(), "still here");
      } finally {
        await end(first, second);
      }
    });
  });
}
