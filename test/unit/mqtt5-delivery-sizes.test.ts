import assert from "node:assert/strict";
import { describe, it } from "node:test";
import mqttPacket from "mqtt-packet";
import { QlobberTrue } from "qlobber";
import { publishSize } from "../../src/engine/mqtt5-delivery.js";
import { TOPIC_MATCHING } from "../../src/engine/persistence-types.js";
import { filterMatches } from "../../src/protocol/topic-rules.js";

/**
 * The MQTT 5 delivery's two per-message helpers against the libraries they stand in for:
 * publishSize against the bytes mqtt-packet writes, filterMatches against qlobber (which the
 * persistence matches with).
 */
describe("MQTT 5 delivery helpers", () => {
  it("publishSize is the length mqtt-packet encodes, properties of every type included", () => {
    const cases = [
      { topic: "t", qos: 0, payload: Buffer.alloc(0), properties: undefined },
      { topic: "plant/7/pump", qos: 1, payload: Buffer.alloc(200), properties: {} },
      {
        topic: "é/ü/日本",
        qos: 2,
        payload: "text payload ü",
        properties: {
          payloadFormatIndicator: true,
          messageExpiryInterval: 300,
          topicAlias: 3,
          responseTopic: "reply/1",
          correlationData: Buffer.from([1, 2, 3]),
          userProperties: { site: "plant-7", tags: ["a", "bb", "ccc"] },
          subscriptionIdentifier: [2, 300, 70_000, 3_000_000],
          contentType: "application/json",
        },
      },
      { topic: "big", qos: 1, payload: Buffer.alloc(20_000), properties: { topicAlias: 1 } },
      { topic: "", qos: 0, payload: Buffer.alloc(3_000_000), properties: { topicAlias: 9 } },
    ] as const;
    for (const { topic, qos, payload, properties } of cases) {
      const encoded = mqttPacket.generate(
        {
          cmd: "publish",
          topic,
          qos,
          messageId: qos > 0 ? 1 : undefined,
          payload,
          retain: false,
          dup: false,
          properties,
        } as mqttPacket.IPublishPacket,
        { protocolVersion: 5 },
      );
      assert.equal(
        publishSize(topic, qos, properties as Parameters<typeof publishSize>[2], payload),
        encoded.length,
        `topic ${JSON.stringify(topic)}, qos ${qos}`,
      );
    }
  });

  it("filterMatches agrees with qlobber on wildcards, empty levels and $ topics", () => {
    const filters = [
      "#",
      "+",
      "a/#",
      "a/+",
      "+/+",
      "a/+/c",
      "+/b/#",
      "a//c",
      "/#",
      "$SYS/#",
      "a/b",
      "a",
    ];
    const topics = ["a", "a/b", "a/b/c", "a//c", "/a", "a/", "b/b/x", "$SYS/x", "$SYS", "", "/"];
    for (const filter of filters) {
      const trie = new QlobberTrue(TOPIC_MATCHING).add(filter);
      for (const topic of topics) {
        const expected = trie.test(topic) && !(/^[#+]/.test(filter) && topic.startsWith("$"));
        assert.equal(
          filterMatches(filter, topic),
          expected,
          `${filter} vs ${JSON.stringify(topic)}`,
        );
      }
    }
  });
});
