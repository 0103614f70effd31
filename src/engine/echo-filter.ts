import type { Readable } from "node:stream";

/** Recognizes this node's own messages by the first bytes of their payload. */
export interface EchoCheck {
  /** Payload bytes the check looks at (fewer only when the payload is shorter). */
  readonly prefixBytes: number;
  /** Whether the payload of `length` bytes at `offset` is an echo (its prefix is there). */
  isEcho(buffer: Buffer, offset: number, length: number): boolean;
}

const CR = 0x0d;
const LF = 0x0a;
const INCOMPLETE = -1;
const MESSAGE = Buffer.from("message");
const PMESSAGE = Buffer.from("pmessage");
const EMPTY = Buffer.alloc(0);
/**
 * A message frame of at most this many bytes that a read cuts is kept until it is whole, so it
 * too is handed over read; a larger one goes to the parser in pieces, as it arrives.
 */
const MAX_HELD_FRAME = 64 * 1024;
/**
 * A frame a read cut is finished from at most this many bytes of the next read, joined to its
 * start; the frames after it are read in that read itself. Joining the whole read would copy
 * nearly every read (64 KiB at full speed, cut mid-frame): about 3 % of a subscribers' node's
 * CPU.
 */
const FINISH_PROBE = 4 * 1024;

/**
 * A `message` or `pmessage` frame read whole: where its parts are in `data`. The filter hands
 * the same object over for every frame (valid during the call only): no array, Buffer or
 * object per message.
 */
export interface MessageFrame {
  data: Buffer;
  /** -1 for a `message` frame. */
  patternStart: number;
  patternEnd: number;
  channelStart: number;
  channelEnd: number;
  payloadStart: number;
  payloadEnd: number;
}

/**
 * Where the filter hands what it keeps, in the connection's order: bytes for the connection's
 * own parser, and the `message`/`pmessage` frames it read whole itself.
 */
export interface FrameSink {
  bytes(data: Buffer): void;
  message(frame: MessageFrame): void;
}

/** A MessageFrame's parts as views of its data (for listeners that take Buffers). */
export function frameParts(frame: MessageFrame): {
  pattern: Buffer | undefined;
  channel: Buffer;
  payload: Buffer;
} {
  const { data } = frame;
  return {
    pattern:
      frame.patternStart < 0 ? undefined : data.subarray(frame.patternStart, frame.patternEnd),
    channel: data.subarray(frame.channelStart, frame.channelEnd),
    payload: data.subarray(frame.payloadStart, frame.payloadEnd),
  };
}

/** What kind of frame measure() read: anything else, a `message` or a `pmessage`. */
const OTHER = 0;
const MESSAGE_FRAME = 1;
const PMESSAGE_FRAME = 2;

/**
 * Cuts this node's echoes out of a pub/sub connection's bytes before ioredis parses them. Each
 * echo otherwise costs the node a parsed reply (an array and three or four Buffers), a string
 * and two events, only to be dropped: 4 µs of JavaScript and garbage collection per message
 * here, a third of what a message over Redis cost beyond one in memory.
 *
 * It reads RESP frame by frame (a frame split over reads is finished on the next), hands on
 * every frame that is not a `message`/`pmessage` carrying an echo, whole and in order, and
 * drops the rest. Bytes it cannot read as RESP are handed on untouched from there on, so the
 * parser reports them as it would have.
 *
 * With a FrameSink, the messages it keeps are handed over read, not as bytes: the parser's
 * reply array, its Buffers and ioredis' per-message event work (a string of the reply's type,
 * a copy of the listener list) were a tenth of a subscribers' node's CPU at QoS 1.
 */
export class EchoFilter {
  /** The start of a frame whose end is not known yet. */
  private carry: Buffer | undefined;
  /** Bytes of the current frame still to hand on, or to drop. */
  private passing = 0;
  private dropping = 0;
  private broken = false;
  /** Set by measure(): the frame's end, and whether it is an echo. */
  private end = 0;
  private echo = false;
  private kept: Buffer[] = [];
  private keptStart = 0;
  private keptEnd = 0;
  /** Set by measure() for a message frame: its kind and the starts and ends of its parts. */
  private kind = OTHER;
  private patternStart = 0;
  private patternEnd = 0;
  private channelStart = 0;
  private channelEnd = 0;
  private payloadStart = 0;
  private readonly frame: MessageFrame = {
    data: EMPTY,
    patternStart: -1,
    patternEnd: -1,
    channelStart: 0,
    channelEnd: 0,
    payloadStart: 0,
    payloadEnd: 0,
  };

  constructor(private readonly check: EchoCheck) {}

  /**
   * The part of `chunk` to hand on, undefined when nothing is. With `sink`, the message frames
   * kept whole go to it instead, each once the bytes before it were given to `sink.bytes`; the
   * bytes returned come after the last of them.
   */
  filter(chunk: Buffer, sink?: FrameSink): Buffer | undefined {
    if (this.broken) return chunk;
    let data = chunk;
    let at = 0;
    this.kept = [];
    this.keptStart = this.keptEnd = 0;
    if (this.dropping > 0) {
      at = Math.min(this.dropping, data.length);
      this.dropping -= at;
    } else if (this.passing > 0) {
      at = Math.min(this.passing, data.length);
      this.passing -= at;
      this.keep(data, 0, at);
    } else if (this.carry !== undefined) {
      const carry = this.carry;
      this.carry = undefined;
      const cut = this.finishCarried(carry, chunk);
      if (cut !== undefined) return this.filterAfterCut(cut, chunk, sink);
      data = Buffer.concat([carry, chunk]);
    }
    while (at < data.length && this.dropping === 0 && this.passing === 0) {
      if (!this.measure(data, at)) {
        if (this.broken) {
          this.keep(data, at, data.length);
          break;
        }
        this.carry = data.subarray(at);
        break;
      }
      const end = Math.min(this.end, data.length);
      if (sink !== undefined && this.kind !== OTHER && !this.echo) {
        if (this.end <= data.length) {
          this.handOver(data, sink);
          at = end;
          continue;
        }
        if (this.end - at <= MAX_HELD_FRAME) {
          this.carry = data.subarray(at);
          break;
        }
      }
      if (this.echo) this.dropping = this.end - end;
      else {
        this.keep(data, at, end);
        this.passing = this.end - end;
      }
      at = end;
    }
    return this.output(data);
  }

  /**
   * The frame `carry` starts, finished from the first bytes of `chunk` (a buffer of its own),
   * and how many of them it took; undefined when it does not end within FINISH_PROBE bytes.
   */
  private finishCarried(
    carry: Buffer,
    chunk: Buffer,
  ): { frame: Buffer; taken: number } | undefined {
    const probe = Buffer.concat([carry, chunk.subarray(0, Math.min(chunk.length, FINISH_PROBE))]);
    if (!this.measure(probe, 0) || this.end > probe.length) return undefined;
    return { frame: probe.subarray(0, this.end), taken: this.end - carry.length };
  }

  /** Filters the finished frame, then the rest of the read, in that order. */
  private filterAfterCut(
    cut: { frame: Buffer; taken: number },
    chunk: Buffer,
    sink: FrameSink | undefined,
  ): Buffer | undefined {
    const first = this.filter(cut.frame, sink);
    if (cut.taken === chunk.length) return first;
    if (sink !== undefined && first !== undefined) sink.bytes(first);
    const rest = this.filter(chunk.subarray(cut.taken), sink);
    if (sink !== undefined || first === undefined) return rest;
    return rest === undefined ? first : Buffer.concat([first, rest]);
  }

  /** The message frame measure() read, whole in `data`, after the bytes kept before it. */
  private handOver(data: Buffer, sink: FrameSink): void {
    const before = this.output(data);
    if (before !== undefined) sink.bytes(before);
    this.kept = [];
    this.keptStart = this.keptEnd = 0;
    const frame = this.frame;
    frame.data = data;
    frame.patternStart = this.kind === PMESSAGE_FRAME ? this.patternStart : -1;
    frame.patternEnd = this.kind === PMESSAGE_FRAME ? this.patternEnd : -1;
    frame.channelStart = this.channelStart;
    frame.channelEnd = this.channelEnd;
    frame.payloadStart = this.payloadStart;
    frame.payloadEnd = this.end - 2;
    sink.message(frame);
    // the read is not kept alive by the frame
    frame.data = EMPTY;
  }

  private keep(data: Buffer, start: number, end: number): void {
    if (start === this.keptEnd && this.keptEnd > this.keptStart) {
      this.keptEnd = end;
      return;
    }
    if (this.keptEnd > this.keptStart) this.kept.push(data.subarray(this.keptStart, this.keptEnd));
    this.keptStart = start;
    this.keptEnd = end;
  }

  private output(data: Buffer): Buffer | undefined {
    const last = this.keptEnd > this.keptStart ? this.keptEnd - this.keptStart : 0;
    if (this.kept.length === 0) {
      if (last === 0) return undefined;
      return last === data.length ? data : data.subarray(this.keptStart, this.keptEnd);
    }
    this.kept.push(data.subarray(this.keptStart, this.keptEnd));
    return Buffer.concat(this.kept);
  }

  /**
   * Reads the frame at `at`: true with `end` (possibly past the data: a bulk string still
   * arriving) and `echo` set, false when more bytes are needed first (or the bytes are not
   * RESP: then `broken` is set).
   */
  private measure(data: Buffer, at: number): boolean {
    this.kind = OTHER;
    if (data[at] !== 0x2a) {
      const end = this.skip(data, at, true);
      if (end === INCOMPLETE) return false;
      this.end = end;
      this.echo = false;
      return true;
    }
    const count = this.integerLine(data, at);
    if (count === undefined) return false;
    let position = this.lineEnd;
    let payloadIndex = -1;
    let kind = OTHER;
    for (let index = 0; index < count; index++) {
      const last = index === count - 1;
      if (index === 0 && data[position] === 0x24) {
        const length = this.integerLine(data, position);
        if (length === undefined) return false;
        const start = this.lineEnd;
        if (start + length > data.length) return false;
        if (count === 3 && this.equals(data, start, length, MESSAGE)) {
          payloadIndex = 2;
          kind = MESSAGE_FRAME;
        }
        if (count === 4 && this.equals(data, start, length, PMESSAGE)) {
          payloadIndex = 3;
          kind = PMESSAGE_FRAME;
        }
      }
      if (index === payloadIndex && data[position] === 0x24) {
        const length = this.integerLine(data, position);
        if (length === undefined) return false;
        const start = this.lineEnd;
        this.echo = false;
        if (length < 0) {
          this.end = start;
          return true;
        }
        if (data.length - start < Math.min(length, this.check.prefixBytes)) return false;
        this.end = start + length + 2;
        this.echo = last && this.check.isEcho(data, start, length);
        // a message whose parts were all bulk strings; anything else is the parser's to read
        if (last && kind !== OTHER) {
          this.kind = kind;
          this.payloadStart = start;
        }
        return true;
      }
      const bulk = data[position] === 0x24;
      const next = this.skip(data, position, last);
      if (next === INCOMPLETE) return false;
      if (index > 0 && kind !== OTHER) {
        if (!bulk || next - 2 < this.lineEnd) kind = OTHER;
        else if (index === payloadIndex - 1) {
          this.channelStart = this.lineEnd;
          this.channelEnd = next - 2;
        } else {
          this.patternStart = this.lineEnd;
          this.patternEnd = next - 2;
        }
      }
      position = next;
    }
    this.end = position;
    this.echo = false;
    return true;
  }

  /**
   * The end of the value at `at` (a bulk string's may lie past the data when `open`: nothing
   * follows it in this frame), or INCOMPLETE.
   */
  private skip(data: Buffer, at: number, open: boolean): number {
    if (at >= data.length) return INCOMPLETE;
    const type = data[at];
    if (type === 0x2b || type === 0x2d || type === 0x3a) {
      const cr = data.indexOf(CR, at + 1);
      if (cr === -1 || cr + 1 >= data.length) return INCOMPLETE;
      return cr + 2;
    }
    if (type === 0x24) {
      const length = this.integerLine(data, at);
      if (length === undefined) return INCOMPLETE;
      if (length < 0) return this.lineEnd;
      const end = this.lineEnd + length + 2;
      return end <= data.length || open ? end : INCOMPLETE;
    }
    if (type === 0x2a) {
      const count = this.integerLine(data, at);
      if (count === undefined) return INCOMPLETE;
      let position = this.lineEnd;
      for (let index = 0; index < count; index++) {
        position = this.skip(data, position, open && index === count - 1);
        if (position === INCOMPLETE) return INCOMPLETE;
      }
      return position;
    }
    this.broken = true;
    return INCOMPLETE;
  }

  /** Set by integerLine(): where the line after the integer starts. */
  private lineEnd = 0;

  /** The integer of a `<type><digits>\r\n` line at `at`, undefined until it is all there. */
  private integerLine(data: Buffer, at: number): number | undefined {
    let position = at + 1;
    let negative = false;
    if (data[position] === 0x2d) {
      negative = true;
      position++;
    }
    let value = 0;
    let digits = 0;
    for (; position < data.length; position++) {
      const byte = data[position] as number;
      if (byte === CR) break;
      if (byte < 0x30 || byte > 0x39 || digits > 15) {
        this.broken = true;
        return undefined;
      }
      value = value * 10 + (byte - 0x30);
      digits++;
    }
    if (position + 1 >= data.length) return undefined;
    if (digits === 0 || data[position + 1] !== LF) {
      this.broken = true;
      return undefined;
    }
    this.lineEnd = position + 2;
    return negative ? -value : value;
  }

  private equals(data: Buffer, start: number, length: number, word: Buffer): boolean {
    return length === word.length && sameBytes(data, start, word);
  }
}

/**
 * Whether `word` is at `start` of `data` (which holds it all): a loop, not Buffer.compare,
 * whose call costs more than these few bytes.
 */
export function sameBytes(data: Buffer, start: number, word: Buffer): boolean {
  for (let i = 0; i < word.length; i++) if (data[start + i] !== word[i]) return false;
  return true;
}

/** Where filterStreamData hands the message frames it reads whole. */
export interface FrameReceiver {
  message(frame: MessageFrame): void;
  /**
   * Called once the frames handed so far are all to be acted on: before bytes go on to the
   * connection's parser (what it reads comes after them), and at the end of each read.
   */
  flush(): void;
}

/**
 * Hands on only what `filter` keeps of each chunk `stream` emits; with `frames`, the message
 * frames it reads whole go there instead of to the stream's `data` listeners.
 */
export function filterStreamData(
  stream: Readable,
  filter: EchoFilter,
  frames?: FrameReceiver,
): void {
  const emit = stream.emit;
  const sink: FrameSink | undefined = frames && {
    bytes: (data) => {
      frames.flush();
      emit.call(stream, "data", data);
    },
    message: (frame) => frames.message(frame),
  };
  stream.emit = function (this: Readable, event: string | symbol, ...args: unknown[]): boolean {
    if (event !== "data" || !Buffer.isBuffer(args[0])) return emit.apply(this, [event, ...args]);
    const kept = filter.filter(args[0], sink);
    frames?.flush();
    return kept === undefined ? true : emit.call(this, event, kept);
  } as Readable["emit"];
}
