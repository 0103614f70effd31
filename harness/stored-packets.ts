import type { StoredPacket } from "../src/engine/persistence-types.js";

let counter = 0;

/** A PUBLISH as aedes stores it, from `brokerId`, each with the next broker counter. */
export function storedPublish(
  topic: string,
  payload = "x",
  qos = 1,
  brokerId = "node-a",
): StoredPacket {
  return {
    cmd: "publish",
    topic,
    payload: Buffer.from(payload),
    qos,
    retain: false,
    dup: false,
    brokerId,
    brokerCounter: ++counter,
  } as StoredPacket;
}

/** Everything a persistence stream yields. */
export async function drain(stream: AsyncIterable<unknown>): Promise<StoredPacket[]> {
  const out: StoredPacket[] = [];
  for await (const item of stream) out.push(item as StoredPacket);
  return out;
}
