import { Command } from "ioredis";

/** Bytes a frame starts with, grown by doubling. */
const INITIAL_BYTES = 4096;
const CRLF = 0x0d0a;

/** A script's part of an EVAL's head, written once. */
export class EvalScript {
  readonly head: Buffer;

  constructor(script: string) {
    this.head = Buffer.from(
      `\r\n$4\r\nEVAL\r\n$${Buffer.byteLength(script)}\r\n${script}\r\n$1\r\n0\r\n`,
    );
  }
}

/**
 * One `EVAL <script> 0 <arg> <arg> ...` written as RESP straight into one buffer, argument by
 * argument. ioredis builds a command's bytes from an argument array (each argument measured,
 * pushed to a list and copied: about 1 µs per argument here, more than PUBLISH costs Redis);
 * this writes each argument once, where it goes. A frame is handed over once (`command()`):
 * ioredis may write it again after a reconnect, so its bytes are never reused.
 */
export class EvalFrame {
  /** Room before the arguments for the head, whose argument count is known at the end. */
  private readonly headRoom: number;
  private readonly afterCount: Buffer;
  private buffer: Buffer;
  private position: number;
  private count = 0;

  constructor(script: EvalScript, sizeHint = INITIAL_BYTES) {
    this.afterCount = script.head;
    // "*" and up to 10 digits of the count.
    this.headRoom = 11 + this.afterCount.length;
    this.buffer = Buffer.allocUnsafe(Math.max(sizeHint, this.headRoom * 2));
    this.position = this.headRoom;
  }

  /** Arguments written so far. */
  get arguments(): number {
    return this.count;
  }

  /** Bytes written so far. */
  get bytes(): number {
    return this.position;
  }

  string(value: string): void {
    const length = Buffer.byteLength(value);
    this.reserve(length + 16);
    this.lengthLine(length);
    this.position += this.buffer.write(value, this.position, length, "utf8");
    this.end();
  }

  bytesOf(value: Buffer): void {
    const length = value.length;
    this.reserve(length + 16);
    this.lengthLine(length);
    this.position += value.copy(this.buffer, this.position);
    this.end();
  }

  /** The EVAL to send (ioredis' sendCommand); the frame takes no more arguments. */
  command(): Command {
    const head = `*${this.count + 3}`;
    const start = this.headRoom - this.afterCount.length - head.length;
    this.buffer.write(head, start, "latin1");
    this.afterCount.copy(this.buffer, this.headRoom - this.afterCount.length);
    return new FrameCommand(this.buffer.subarray(start, this.position));
  }

  /** `$<length>\r\n`, the head of a bulk string. */
  private lengthLine(length: number): void {
    this.buffer[this.position++] = 0x24;
    this.position += this.buffer.write(String(length), this.position, "latin1");
    this.buffer.writeUInt16BE(CRLF, this.position);
    this.position += 2;
  }

  private end(): void {
    this.buffer.writeUInt16BE(CRLF, this.position);
    this.position += 2;
    this.count++;
  }

  private reserve(bytes: number): void {
    if (this.position + bytes <= this.buffer.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.position + bytes));
    this.buffer.copy(grown, 0, 0, this.position);
    this.buffer = grown;
  }
}

/** A command whose bytes are already written. */
class FrameCommand extends Command {
  constructor(private readonly frame: Buffer) {
    super("eval");
  }

  override toWritable(): Buffer {
    return this.frame;
  }
}
