import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import {
  type EchoCheck,
  EchoFilter,
  type FrameSink,
  filterStreamData,
  frameParts,
} from "../../src/engine/echo-filter.js";

/**
 * The filter hands on every frame but this node's echoes, whole and in order, however the
 * connection's bytes are cut into reads: the stream of a subscriber connection is cut at every
 * possible point, and at random points many times over.
 */
const ORIGIN = Buffer.from("ECHO:");
const check: EchoCheck = {
  prefixBytes: ORIGIN.length,
  isEcho: (buffer, offset, length) =>
    length >= ORIGIN.length &&
    buffer.compare(ORIGIN, 0, ORIGIN.length, offset, offset + ORIGIN.length) === 0,
};

const bulk = (value: string | Buffer): string | Buffer => {
  const bytes = Buffer.isBuffer(value) ? value : Buffer.from(value);
  return Buffer.concat([Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from("\r\n")]);
};
const frame = (...parts: Array<string | Buffer>): Buffer =>
  Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p))));
const message = (channel: string, payload: string | Buffer) =>
  frame("*3\r\n", bulk("message"), bulk(channel), bulk(payload));
const pmessage = (pattern: string, channel: string, payload: string | Buffer) =>
  frame("*4\r\n", bulk("pmessage"), bulk(pattern), bulk(channel), bulk(payload));

const frames: Array<{ bytes: Buffer; echo: boolean }> = [
  { bytes: frame("+OK\r\n"), echo: false },
  { bytes: frame("*3\r\n", bulk("subscribe"), bulk("a/b"), ":1\r\n"), echo: false },
  { bytes: message("a/b", "ECHO:1 mine"), echo: true },
  { bytes: message("a/b", "OTHER:1 theirs"), echo: false },
  { bytes: pmessage("a/*", "a/c", "ECHO:2 mine"), echo: true },
  { bytes: pmessage("a/*", "a/c", "OTHER:2 theirs"), echo: false },
  { bytes: message("a/b", Buffer.concat([ORIGIN, Buffer.alloc(70_000, 0x0d)])), echo: true },
  {
    bytes: message("a/b", Buffer.concat([Buffer.from("X"), Buffer.alloc(70_000, 0x0a)])),
    echo: false,
  },
  { bytes: message("a/b", "ECH"), echo: false },
  { bytes: message("a/b", ""), echo: false },
  { bytes: frame("*3\r\n", bulk("message"), bulk("a/b"), "$-1\r\n"), echo: false },
  { bytes: frame("*2\r\n", bulk("pong"), bulk("")), echo: false },
  { bytes: frame("-ERR something\r\n"), echo: false },
  { bytes: frame("*2\r\n*1\r\n:5\r\n", bulk("nested")), echo: false },
  { bytes: message("ECHO:channel", "OTHER:3 a channel that looks like an echo"), echo: false },
];
const stream = Buffer.concat(frames.map((f) => f.bytes));
const expected = Buffer.concat(frames.filter((f) => !f.echo).map((f) => f.bytes));

function run(cuts: number[]): Buffer {
  const filter = new EchoFilter(check);
  const out: Buffer[] = [];
  let from = 0;
  for (const cut of [...cuts, stream.length]) {
    if (cut <= from) continue;
    const kept = filter.filter(Buffer.from(stream.subarray(from, cut)));
    if (kept !== undefined) out.push(kept);
    from = cut;
  }
  return Buffer.concat(out);
}

/**
 * The same with a sink: what it is handed, in order, the messages written back as the frames
 * they were read from; and how many messages it was handed read.
 */
function runWithSink(cuts: number[]): { bytes: Buffer; read: number } {
  const filter = new EchoFilter(check);
  const out: Buffer[] = [];
  let read = 0;
  const sink: FrameSink = {
    bytes: (data) => out.push(Buffer.from(data)),
    message(frame) {
      read++;
      const { pattern, channel, payload } = frameParts(frame);
      out.push(
        pattern === undefined
          ? message(channel.toString(), Buffer.from(payload))
          : pmessage(pattern.toString(), channel.toString(), Buffer.from(payload)),
      );
    },
  };
  let from = 0;
  for (const cut of [...cuts, stream.length]) {
    if (cut <= from) continue;
    const kept = filter.filter(Buffer.from(stream.subarray(from, cut)), sink);
    if (kept !== undefined) out.push(kept);
    from = cut;
  }
  return { bytes: Buffer.concat(out), read };
}

/** Messages not echoed, every part a bulk string: all read when whole in one read. */
const READ_WHOLE = 6;
/** One of them is over 64 KiB: a read that cuts it hands it on as bytes. */
const READ_CUT = 5;

describe("EchoFilter", () => {
  it("drops the echoes of one read holding every frame", () => {
    assert.deepEqual(run([]), expected);
  });

  it("drops the same however the bytes are cut in two", () => {
    for (let cut = 1; cut < stream.length; cut += cut < 400 ? 1 : 997) {
      assert.deepEqual(run([cut]), expected, `cut at ${cut}`);
    }
  });

  it("drops the same when the bytes come in many small reads", () => {
    randomCuts(7, stream.length).forEach((cuts, round) => {
      assert.deepEqual(run(cuts), expected, `round ${round}`);
    });
  });

  it("hands a sink the messages it keeps read, in order among the other frames", () => {
    const whole = runWithSink([]);
    assert.deepEqual(whole.bytes, expected);
    assert.equal(whole.read, READ_WHOLE);
  });

  it("hands a sink the same however the bytes are cut", () => {
    for (let cut = 1; cut < stream.length; cut += cut < 400 ? 1 : 997) {
      const { bytes, read } = runWithSink([cut]);
      assert.deepEqual(bytes, expected, `cut at ${cut}`);
      assert.ok(read >= READ_CUT, `cut at ${cut}: ${read} read`);
    }
    randomCuts(11, stream.length).forEach((cuts, round) => {
      assert.deepEqual(runWithSink(cuts).bytes, expected, `round ${round}`);
    });
  });

  it("hands on bytes it cannot read as RESP untouched, from there on", () => {
    const filter = new EchoFilter(check);
    const junk = Buffer.from("?junk\r\n");
    const echo = message("a/b", "ECHO:3");
    assert.equal(filter.filter(Buffer.from(echo)), undefined);
    assert.deepEqual(filter.filter(Buffer.concat([junk, echo])), Buffer.concat([junk, echo]));
    assert.deepEqual(filter.filter(echo), echo);
  });
});

describe("filterStreamData", () => {
  it("has the frames it handed acted on before bytes go on to the parser, and at each read's end", () => {
    const stream = new PassThrough();
    // what happened, in order: frames acted on (at a flush), and bytes the parser got
    const events: string[] = [];
    const held: string[] = [];
    filterStreamData(stream, new EchoFilter(check), {
      message: (frame) => held.push(frameParts(frame).payload.toString().slice(0, 8)),
      flush: () => {
        events.push(...held);
        held.length = 0;
      },
    });
    stream.on("data", (data: Buffer) => events.push(`bytes ${data.length}`));
    const big = message("a/b", Buffer.alloc(70_000, 0x61));
    const reply = frame("*3\r\n", bulk("subscribe"), bulk("c/d"), ":2\r\n");
    const reads = [
      Buffer.concat([
        message("a/b", "OTHER:1"),
        message("a/b", "ECHO:1"),
        message("a/b", "OTHER:2"),
      ]),
      // a frame over 64 KiB, cut by the reads: handed to the parser as bytes
      Buffer.concat([message("a/b", "OTHER:3"), big.subarray(0, 30_000)]),
      Buffer.concat([big.subarray(30_000), message("a/b", "OTHER:4")]),
      // a reply the parser reads, between two messages of one read
      Buffer.concat([message("a/b", "OTHER:5"), reply, message("a/b", "OTHER:6")]),
    ];
    for (const read of reads) stream.write(read);
    const bigStart = 30_000;
    assert.deepEqual(events, [
      "OTHER:1",
      "OTHER:2",
      "OTHER:3",
      `bytes ${bigStart}`,
      `bytes ${big.length - bigStart}`,
      "OTHER:4",
      "OTHER:5",
      `bytes ${reply.length}`,
      "OTHER:6",
    ]);
  });
});

/** 200 rounds of read boundaries over `length` bytes, 1 to 600 apart, from a seeded generator. */
function randomCuts(seed: number, length: number): number[][] {
  let state = seed;
  const random = (): number => {
    state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
    return state / 2 ** 31;
  };
  return Array.from({ length: 200 }, () => {
    const cuts: number[] = [];
    for (let at = 0; at < length; at += 1 + Math.floor(random() * 600)) cuts.push(at);
    return cuts;
  });
}
