import assert from "node:assert/strict";
import type { Readable } from "node:stream";
import { describe, it } from "node:test";
import { cappedMemoryPersistence } from "../../src/mqtt/aedes-internals.js";
import { indexRetained } from "../../src/mqtt/retained-index.js";

interface Store {
  storeRetained(packet: object): Promise<void>;
  createRetainedStreamCombi(patterns: string[]): Readable;
}

/** aedes' in-memory store (as a node builds it), counting the walks of its retained messages. */
function indexedStore(): { store: Store; walks: () => number } {
  const store = cappedMemoryPersistence({
    maxQueuedPerClient: 10,
    onQueueFull: () => {},
  }) as unknown as Store;
  let walks = 0;
  const walk = store.createRetainedStreamCombi.bind(store);
  store.createRetainedStreamCombi = (patterns) => {
    walks++;
    return walk(patterns);
  };
  return { store: indexRetained(store), walks: () => walks };
}

const retained = (topic: string, payload: string) => ({
  cmd: "publish",
  topic,
  payload: Buffer.from(payload),
  qos: 0,
  retain: true,
});

async function topicsOf(stream: Readable): Promise<string[]> {
  const topics: string[] = [];
  for await (const packet of stream) topics.push((packet as { topic: string }).topic);
  return topics.sort();
}

describe("retained index (in memory)", () => {
  it("answers filters that can match no retained message without walking the store", async () => {
    const { store, walks } = indexedStore();
    assert.deepEqual(await topicsOf(store.createRetainedStreamCombi(["plc/1/cmd", "plc/#"])), []);
    await store.storeRetained(retained("plant/state", "on"));
    assert.deepEqual(
      await topicsOf(store.createRetainedStreamCombi(["plc/1/cmd", "plc/2/cmd"])),
      [],
    );
    assert.equal(walks(), 0, "nothing retained, or exact filters matching no retained topic");
  });

  it("still gives the retained messages an exact or a wildcard filter matches, and forgets deleted ones", async () => {
    const { store, walks } = indexedStore();
    await store.storeRetained(retained("plant/state", "on"));
    await store.storeRetained(retained("plant/mode", "auto"));
    assert.deepEqual(await topicsOf(store.createRetainedStreamCombi(["plant/state"])), [
      "plant/state",
    ]);
    assert.deepEqual(await topicsOf(store.createRetainedStreamCombi(["plant/+"])), [
      "plant/mode",
      "plant/state",
    ]);
    // [MQTT-3.3.1-10] an empty retained payload deletes the topic's retained message.
    await store.storeRetained(retained("plant/state", ""));
    await store.storeRetained(retained("plant/mode", ""));
    const before = walks();
    assert.deepEqual(await topicsOf(store.createRetainedStreamCombi(["plant/+"])), []);
    assert.equal(walks(), before, "nothing retained any more: no walk");
  });
});
