import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { type AddressInfo, createServer, type Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { describe, it } from "node:test";
import { withDeadline } from "../../harness/deadline.js";
import { ReadBatching } from "../../src/limits/read-batching.js";

/** 4-byte writes, one a segment, this far apart: a client acknowledging deliveries one by one. */
const WRITES = 1_500;
const WRITE_EVERY_US = 200;

/**
 * A client in another process (the node's loop sleeps, so the client must not share it) sends
 * WRITES 4-byte writes, each on its own; resolves with the reads the server made of them.
 */
async function readsOfTrickle(batching: ReadBatching | undefined): Promise<{
  reads: number;
  bytes: number;
  ms: number;
}> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  const client = spawn(
    process.execPath,
    [
      "-e",
      `const s = require("node:net").connect(${port}, "127.0.0.1", () => {
        s.setNoDelay(true);
        const ack = Buffer.from([0x40, 2, 0, 1]);
        for (let i = 0; i < ${WRITES}; i++) {
          s.write(ack);
          const until = process.hrtime.bigint() + ${WRITE_EVERY_US}n * 1000n;
          while (process.hrtime.bigint() < until);
        }
        s.end();
      });`,
    ],
    { stdio: "inherit" },
  );
  try {
    const [socket] = (await withDeadline(once(server, "connection"), 10_000, "the client")) as [
      Socket,
    ];
    let reads = 0;
    let bytes = 0;
    socket.on("data", (chunk: Buffer) => {
      reads++;
      bytes += chunk.length;
    });
    const started = performance.now();
    batching?.start();
    await withDeadline(once(socket, "end"), 20_000, "the client's writes");
    const ms = performance.now() - started;
    batching?.stop();
    return { reads, bytes, ms };
  } finally {
    batching?.stop();
    client.kill("SIGKILL");
    server.close();
  }
}

/** Runs `passes` event-loop passes that each work `busyMs`, resolving after the last. */
function busyPasses(passes: number, busyMs: number): Promise<void> {
  return new Promise((resolve) => {
    let left = passes;
    const pass = (): void => {
      const until = performance.now() + busyMs;
      while (performance.now() < until);
      if (--left === 0) resolve();
      else setImmediate(pass);
    };
    setImmediate(pass);
  });
}

describe("read batching (limits/read-batching.ts)", () => {
  it("reads a trickle of 4-byte writes many at a time, a pass at most every gap", async () => {
    const gapMs = 5;
    const batched = await readsOfTrickle(new ReadBatching(gapMs));
    assert.equal(batched.bytes, WRITES * 4, "every byte read");
    // One read per pass; passes at most every gap (plus the first, and the client's end).
    const bound = Math.ceil(batched.ms / gapMs) + 5;
    assert.ok(
      batched.reads <= bound,
      `${batched.reads} reads in ${batched.ms.toFixed(0)} ms: at most ${bound}`,
    );
    assert.ok(batched.reads < WRITES / 4, `${batched.reads} reads of ${WRITES} writes`);
  });

  it("without it, the same trickle is read in many more reads (the case it is for)", async () => {
    const unbatched = await readsOfTrickle(undefined);
    assert.equal(unbatched.bytes, WRITES * 4);
    const batched = await readsOfTrickle(new ReadBatching(5));
    assert.ok(
      unbatched.reads >= 2 * batched.reads,
      `unbatched ${unbatched.reads} reads, batched ${batched.reads}`,
    );
  });

  it("sleeps after a short pass for the rest of the gap, not after a pass longer than the gap", async () => {
    const batching = new ReadBatching(5);
    batching.start();
    try {
      await busyPasses(20, 8);
      const afterLong = batching.sleptMs;
      assert.ok(afterLong < 5, `slept ${afterLong.toFixed(2)} ms after passes of 8 ms`);
      await busyPasses(20, 1);
      const afterShort = batching.sleptMs - afterLong;
      // Each pass of 1 ms is followed by a sleep of about 4 ms.
      assert.ok(afterShort >= 20 * 2, `slept ${afterShort.toFixed(2)} ms after passes of 1 ms`);
      assert.ok(afterShort <= 20 * 5 + 5, `slept ${afterShort.toFixed(2)} ms: at most the gaps`);
    } finally {
      batching.stop();
    }
    assert.equal(batching.started, false);
    const stoppedAt = batching.sleptMs;
    await busyPasses(10, 0.5);
    assert.equal(batching.sleptMs, stoppedAt, "no sleep once stopped");
  });

  it("with a gap of 0, never starts", () => {
    const batching = new ReadBatching(0);
    batching.start();
    assert.equal(batching.started, false);
  });
});
