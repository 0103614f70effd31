import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Redis } from "ioredis";
import { pino } from "pino";
import { SubscriptionLag } from "../../src/cluster/subscription-lag.js";

/** A line of `CLIENT LIST TYPE pubsub` as Redis 7 writes it. */
function line(name: string, omem: number): string {
  return (
    `id=7 addr=127.0.0.1:50000 laddr=127.0.0.1:6379 fd=9 name=${name} age=3 idle=0 flags=P ` +
    `db=0 sub=1 psub=2 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 ` +
    `rbp=0 obl=0 oll=1 omem=${omem} tot-mem=${omem + 2000} events=rw cmd=psubscribe user=default`
  );
}

const OWN = "sluice/node-a/aaaa/subscriber";
const B = "sluice/node-b/bbbb/subscriber";

describe("the cluster's subscription lag", () => {
  it("counts its own lag and every other node's; a node past the bound for stallMs no longer, until it drains", () => {
    // never connects: read() is given CLIENT LIST's answers
    const query = new Redis({ lazyConnect: true });
    const lag = new SubscriptionLag(
      query,
      OWN,
      { boundBytes: 1_000, stallMs: 5_000, readingPausedKey: (id) => `reading-paused:${id}` },
      pino({ level: "silent" }),
    );
    const list = (own: number, b: number) =>
      [line(OWN, own), line(B, b), line("someone-else", 9_999_999)].join("\n");
    lag.read(list(10, 500), 0);
    assert.deepEqual([lag.bytes, lag.clusterBytes, lag.laggingNode], [10, 500, "node-b"]);
    lag.read(list(10, 50_000), 1_000);
    assert.deepEqual([lag.clusterBytes, lag.laggingNode], [50_000, "node-b"], "behind: counts");
    // stallMs counts from its last look under the bound (0 here)
    lag.read(list(10, 60_000), 4_999);
    assert.equal(lag.clusterBytes, 60_000, "past the bound for less than stallMs");
    lag.read(list(10, 70_000), 5_001);
    assert.deepEqual([lag.clusterBytes, lag.laggingNode], [10, "node-a"], "stalled: left out");
    lag.read(list(10, 900), 7_000);
    assert.deepEqual([lag.clusterBytes, lag.laggingNode], [900, "node-b"], "drains: counts again");
    lag.read(list(3_000, 0), 8_000);
    assert.deepEqual(
      [lag.bytes, lag.clusterBytes],
      [3_000, 3_000],
      "its own lag is never left out",
    );
    query.disconnect();
  });
});
