import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Command } from "ioredis";
import { EvalFrame, EvalScript } from "../../src/redis/eval-frame.js";

/**
 * The frame is the EVAL ioredis itself would write for the same arguments, byte for byte, also
 * once it has outgrown its first buffer, and with arguments of several UTF-8 widths.
 */
const SCRIPT = "return #ARGV";

function ioredisBytes(args: Array<string | Buffer>): Buffer {
  const written = new Command("EVAL", [SCRIPT, "0", ...args]).toWritable({});
  return Buffer.isBuffer(written) ? written : Buffer.from(written);
}

describe("EvalFrame", () => {
  it("writes what ioredis writes for the same EVAL", () => {
    const args: Array<string | Buffer> = [
      "plant/pump/7",
      Buffer.from([0x82, 0xa2, 0x69, 0x64, 0x00, 0x0d, 0x0a]),
      "Grüße/温度/🌡",
      Buffer.alloc(0),
      "",
    ];
    const frame = new EvalFrame(new EvalScript(SCRIPT));
    for (const arg of args) {
      if (typeof arg === "string") frame.string(arg);
      else frame.bytesOf(arg);
    }
    assert.equal(frame.arguments, args.length);
    const command = frame.command();
    assert.deepEqual(command.toWritable({}), ioredisBytes(args));
    command.reject(new Error("not sent"));
    return command.promise.catch(() => undefined);
  });

  it("grows past its first buffer without losing what it holds", () => {
    const args: Array<string | Buffer> = [];
    for (let i = 0; i < 300; i++) {
      args.push(`topic/${i}`, Buffer.alloc(1000 + i, i % 256));
    }
    const frame = new EvalFrame(new EvalScript(SCRIPT), 64);
    for (const arg of args) {
      if (typeof arg === "string") frame.string(arg);
      else frame.bytesOf(arg);
    }
    const command = frame.command();
    assert.deepEqual(command.toWritable({}), ioredisBytes(args));
    command.reject(new Error("not sent"));
    return command.promise.catch(() => undefined);
  });
});
