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

/** A lag with a bound of 1,000 bytes and stallMs 5 s, whose query connection never connects. */
function newLag() {
  // read() is given CLIENT LIST's answers
  const query = new Redis({ lazyConnect: true });
  const lag = new SubscriptionLag(
    query,
    OWN,
    { boundBytes: 1_000, stallMs: 5_000, readingPausedKey: (id) => `reading-paused:${id}` },
    pino({ level: "silent" }),
  );
  return { query, lag };
}

describe("the cluster's subscription lag", () => {
  it("counts its own lag and every other node's; a node past the bound for stallMs no longer, until it drains", () => {
    const { query, lag } = newLag();
    const list = (own: number, b: number) => [
      [line(OWN, own), line(B, b), line("someone-else", 9_999_999)].join("\n"),
    ];
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

  it("on a Redis Cluster reads every primary's CLIENT LIST: a node's lag is its largest shard connection's", () => {
    const { query, lag } = newLag();
    const C = "sluice/node-c/cccc/subscriber";
    // Each primary has one shard connection of each node, under the node's subscriber name.
    const primaries = (own: number[], b: number[], c: number[]) =>
      own.map((_, i) =>
        [
          line(OWN, own[i] as number),
          line(B, b[i] as number),
          line(C, c[i] as number),
          line("sluice/node-b/bbbb/state", 99_999_999),
        ].join("\n"),
      );
    lag.read(primaries([10, 30, 20], [0, 0, 700], [400, 0, 0]), 0);
    assert.deepEqual(
      [lag.bytes, lag.clusterBytes, lag.laggingNode],
      [30, 700, "node-b"],
      "each node's largest over the primaries, not another primary's smaller one",
    );
    lag.read(primaries([10, 30, 20], [0, 2_000, 700], [400, 0, 1_500]), 1_000);
    assert.deepEqual([lag.clusterBytes, lag.laggingNode], [2_000, "node-b"], "largest, not a sum");
    lag.read(primaries([10, 30, 20], [0, 600, 400], [400, 0, 900]), 2_000);
    assert.deepEqual(
      [lag.clusterBytes, lag.laggingNode],
      [900, "node-c"],
      "under the bound: not summed past it",
    );
    // A primary that did not answer: the others' lines are the lag.
    lag.read(primaries([5], [100], [50]), 3_000);
    assert.deepEqual([lag.bytes, lag.clusterBytes, lag.laggingNode], [5, 100, "node-b"]);
    // B's connection past the bound on one primary for stallMs: stalled, then left out.
    lag.read(primaries([5, 5], [100, 5_000], [50, 50]), 4_000);
    lag.read(primaries([5, 5], [100, 5_000], [50, 50]), 9_001);
    assert.deepEqual([lag.clusterBytes, lag.laggingNode], [50, "node-c"], "B stalled: left out");
    query.disconnect();
  });
});
