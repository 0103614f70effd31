import assert from "node:assert/strict";
import { describe, it } from "node:test";
import mqemitter from "mqemitter";
import { memoryEmitter } from "../../src/engine/emitters.js";

/**
 * Emits `count` messages at once into an emitter with room for one at a time: the first one's
 * listener answers later, so the rest queue behind it; every later listener answers at once,
 * as a node's QoS 0 delivery does, so the queue is released in one go.
 */
function flood(emitter: mqemitter.MQEmitter, count: number): Promise<number> {
  let delivered = 0;
  return new Promise((resolve, reject) => {
    emitter.on("flood/#", (_message, done) => {
      delivered++;
      if (delivered === 1) setImmediate(() => settle(done));
      else done();
    });
    const settle = (done: () => void): void => {
      try {
        done();
        resolve(delivered);
      } catch (error) {
        reject(error);
      }
    };
    for (let i = 0; i < count; i++) emitter.emit({ topic: `flood/${i}` });
  });
}

describe("engine emitters", () => {
  it("a queued flood whose listeners answer synchronously is released in a loop, not a recursion", async () => {
    const delivered = await flood(memoryEmitter(1), 30_000);
    assert.equal(delivered, 30_000);
  });

  it("the stock emitter overflows the stack on the same flood (what the loop prevents)", async () => {
    await assert.rejects(flood(mqemitter({ concurrency: 1 }), 30_000), RangeError);
  });

  it("+ matches an empty level, as aedes' own emitter does [MQTT-4.7.1-3]", async () => {
    const emitter = memoryEmitter(100);
    const topics: string[] = [];
    await new Promise<void>((resolve) =>
      emitter.on(
        "plant/+",
        (message, done) => {
          topics.push(message.topic);
          done();
        },
        resolve,
      ),
    );
    await new Promise<void>((resolve) => emitter.emit({ topic: "plant/" }, () => resolve()));
    assert.deepEqual(topics, ["plant/"]);
  });
});
