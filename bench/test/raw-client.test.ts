import assert from "node:assert/strict";
import { test } from "node:test";
import type { IPublishPacket } from "mqtt";
import { withDeadline } from "../../harness/deadline.js";
import { startNode } from "../../harness/in-process-node.js";
import { connect } from "../../harness/mqtt-client.js";
import type { ProtocolLevel } from "../src/generator/protocol-level.js";
import { RawClient } from "../src/generator/raw-client.js";

const DEADLINE_MS = 10_000;

for (const level of [4, 5] as ProtocolLevel[]) {
  test(`RawClient at level ${level}: QoS 0 and 1 PUBLISHes reach a raw and an MQTT.js subscriber byte for byte, QoS 1 is acknowledged`, async () => {
    const running = await startNode();
    const url = running.urls.tcp ?? "";
    const clients: Array<{ end(force?: boolean): unknown }> = [];
    try {
      const publisher = await RawClient.connect(url, {
        clientId: `p${level}`,
        protocolVersion: level,
      });
      const subscriber = await RawClient.connect(url, {
        clientId: `s${level}`,
        protocolVersion: level,
      });
      const reference = await connect(url, { clientId: `m${level}`, protocolVersion: level });
      clients.push(publisher, subscriber, reference);
      await subscriber.subscribeAsync("raw/t", { qos: 1 });
      await reference.subscribeAsync("raw/t", { qos: 1 });
      const rawReceived: Array<[string, Buffer]> = [];
      const referenceReceived: IPublishPacket[] = [];
      const allArrived = Promise.all([
        new Promise<void>((resolve) =>
          subscriber.on("message", (topic, payload) => {
            if (rawReceived.push([topic, Buffer.from(payload)]) === 4) resolve();
          }),
        ),
        new Promise<void>((resolve) =>
          reference.on("message", (_topic, _payload, packet) => {
            if (referenceReceived.push(packet) === 4) resolve();
          }),
        ),
      ]);
      const payloads = [0, 1, 2, 3].map((i) => Buffer.alloc(64 + i, 0x41 + i));
      const properties = { userProperties: { site: "plant-7/line-3" } };
      const acknowledged = payloads.map(
        (payload, i) =>
          new Promise<Error | undefined>((resolve) =>
            publisher.publish(
              "raw/t",
              payload,
              { qos: i < 2 ? 0 : 1, ...(level === 5 && i % 2 === 1 ? { properties } : {}) },
              resolve,
            ),
          ),
      );
      assert.deepEqual(await Promise.all(acknowledged), [
        undefined,
        undefined,
        undefined,
        undefined,
      ]);
      await withDeadline(allArrived, DEADLINE_MS, "every message at both subscribers");
      assert.deepEqual(
        rawReceived.map(([topic, payload]) => [topic, payload.toString("hex")]),
        payloads.map((p) => ["raw/t", p.toString("hex")]),
      );
      assert.deepEqual(
        referenceReceived.map((p) => [p.qos, Buffer.from(p.payload).toString("hex")]),
        payloads.map((p, i) => [i < 2 ? 0 : 1, p.toString("hex")]),
      );
      assert.deepEqual(
        referenceReceived.map((p) =>
          p.properties?.userProperties ? { ...p.properties.userProperties } : undefined,
        ),
        level === 5
          ? [undefined, properties.userProperties, undefined, properties.userProperties]
          : [undefined, undefined, undefined, undefined],
      );
    } finally {
      for (const client of clients) client.end(true);
      await running.stop();
    }
  });
}
