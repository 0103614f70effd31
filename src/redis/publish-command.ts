import { Command, type Redis, ReplyError } from "ioredis";

/** PUBLISH as a RESP array of three bulk strings (named as ioredis writes it), up to the channel's length. */
const HEAD = Buffer.from("*3\r\n$7\r\npublish\r\n$");

/**
 * A PUBLISH whose RESP bytes are written here, in one buffer, rather than by ioredis from an
 * argument list. ioredis still queues it and matches Redis' answer to it, so replies, errors,
 * the offline queue while reconnecting and ordering on the connection behave as for its own
 * commands; what is left out is its per-command argument work (the generated method's options,
 * the arguments flattened, checked and measured, and the frame assembled from strings and
 * buffers), which cost a node about 3 µs per message over Redis.
 */
export class PublishCommand extends Command {
  constructor(private readonly frame: Buffer) {
    super("publish");
  }

  override toWritable(): Buffer {
    return this.frame;
  }
}

/** The RESP bytes of `PUBLISH channel message`. */
export function publishFrame(channel: string, message: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(frameBytes(channel, message));
  writeFrame(frame, 0, channel, message);
  return frame;
}

/** What `channelBytes` last measured: whether the channel was ASCII, and its UTF-8 bytes. */
let measuredAscii = true;
let measuredBytes = 0;

/** The frame's length for `channel` and `message` (the channel measured for writeFrame). */
function frameBytes(channel: string, message: Buffer): number {
  measuredAscii = isAscii(channel);
  measuredBytes = measuredAscii ? channel.length : Buffer.byteLength(channel);
  const messageBytes = message.length;
  return (
    HEAD.length + digits(measuredBytes) + measuredBytes + digits(messageBytes) + messageBytes + 9
  );
}

/** Writes the frame frameBytes() just measured at `at` of `frame`; returns where it ends. */
function writeFrame(frame: Buffer, start: number, channel: string, message: Buffer): number {
  const channelBytes = measuredBytes;
  frame.set(HEAD, start);
  let at = writeDecimal(frame, start + HEAD.length, channelBytes);
  at = crlf(frame, at);
  if (measuredAscii) {
    for (let i = 0; i < channelBytes; i++) frame[at + i] = channel.charCodeAt(i);
    at += channelBytes;
  } else at += frame.write(channel, at, channelBytes, "utf8");
  at = crlf(frame, at);
  frame[at++] = 0x24; // $
  at = writeDecimal(frame, at, message.length);
  at = crlf(frame, at);
  frame.set(message, at);
  return crlf(frame, at + message.length);
}

function isAscii(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) >= 0x80) return false;
  return true;
}

function digits(value: number): number {
  let count = 1;
  for (let rest = value; rest >= 10; rest = Math.floor(rest / 10)) count++;
  return count;
}

function writeDecimal(frame: Buffer, at: number, value: number): number {
  const end = at + digits(value);
  let rest = value;
  for (let i = end - 1; i >= at; i--) {
    frame[i] = 0x30 + (rest % 10);
    rest = Math.floor(rest / 10);
  }
  return end;
}

function crlf(frame: Buffer, at: number): number {
  frame[at] = 0x0d;
  frame[at + 1] = 0x0a;
  return at + 2;
}

/** Sends `PUBLISH channel message` on `redis`; the promise settles with Redis' answer. */
export function sendPublish(redis: Redis, channel: string, message: Buffer): Promise<unknown> {
  const command = new PublishCommand(publishFrame(channel, message));
  redis.sendCommand(command);
  return command.promise;
}

/** Called once Redis has answered a PUBLISH: no error, its error reply, or the connection's failure. */
export type PublishAnswered = (error?: Error) => void;

/** The parts of ioredis' connection the batcher works on (private in its types). */
interface QueuedConnection {
  status: string;
  condition: { select: number } | null;
  commandQueue: { unshift(item: object): unknown };
  sendCommand(command: Command, stream?: unknown): unknown;
}

/**
 * The PUBLISHes one batch sends, as one ioredis command that takes one reply per PUBLISH: after
 * each reply but the last it is put back at the head of the connection's command queue, as
 * ioredis does itself with a SUBSCRIBE awaiting its channels' replies. Sent again after a
 * reconnect (ioredis resends the commands it had written), it writes the PUBLISHes not yet
 * answered.
 */
class PublishBatch extends Command {
  /** Replies taken so far. */
  private replies = 0;
  /** The batch's entry in the command queue while it waits for more replies. */
  private queued: { command: Command; select: number | undefined } | undefined;

  constructor(
    private readonly connection: QueuedConnection,
    private readonly bytes: Buffer,
    /** Where each PUBLISH starts in `bytes`. */
    private readonly starts: number[],
    private readonly answers: PublishAnswered[],
  ) {
    super("publish");
    this.resolve = settleNext;
    this.reject = failNext;
  }

  override toWritable(): Buffer {
    return this.replies === 0 ? this.bytes : this.bytes.subarray(this.starts[this.replies]);
  }

  /** The next PUBLISH's answer; the batch waits for the one after at the head of the queue. */
  answerNext(error?: Error): void {
    const index = this.replies++;
    if (this.replies < this.answers.length) {
      this.queued ??= { command: this, select: this.connection.condition?.select };
      this.connection.commandQueue.unshift(this.queued);
    }
    (this.answers[index] as PublishAnswered)(error);
  }

  /** The connection failed (ended, or ioredis gave up resending): every PUBLISH left fails. */
  failRest(error: Error): void {
    const from = this.replies;
    this.replies = this.answers.length;
    for (let i = from; i < this.answers.length; i++) (this.answers[i] as PublishAnswered)(error);
  }
}

(PublishBatch.prototype as unknown as { initPromise(): void }).initPromise = () => {};

function settleNext(this: PublishBatch): void {
  this.answerNext();
}

/** A reply error answers one PUBLISH; any other error is the connection's, for them all. */
function failNext(this: PublishBatch, error: Error): void {
  if (error instanceof ReplyError) this.answerNext(error);
  else this.failRest(error);
}

/** Batches take their bytes from slabs of this size (one of their own when larger). */
const SLAB_BYTES = 64 * 1024;

/**
 * Sends the PUBLISHes a connection is given in one turn of the event loop (every socket read
 * of its poll phase, all their publishers') as one ioredis command, its frames built here into
 * one buffer. ioredis makes each command an object, a queue entry and a write of its own (a
 * write request in the socket's buffer, one more buffer in its writev); per PUBLISH there is
 * left the frame's bytes and the reply's dispatch.
 *
 * The batch goes out in the loop's check phase (setImmediate), where aedes writes the copies
 * of those messages to this node's own subscribers (local-first delivery): the publishers read
 * after the first one in a turn no longer wait for a command per read, and the subscribers'
 * copies leave before the batch (write-coalescing.ts releases clients' sockets first). It
 * goes before any other command on the connection (its sendCommand is wrapped): a reserved
 * QoS 2 publish script, or anything else, is written after the PUBLISHes given before it, so
 * the order of every message on the connection is the order they were given in. Redis answers
 * them in that order, each PUBLISH's answer to its own callback.
 */
export class PublishBatcher {
  private slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
  /** Where the pending batch starts in the slab, and where its bytes end. */
  private start = 0;
  private end = 0;
  private starts: number[] = [];
  private answers: PublishAnswered[] = [];
  private readonly connection: QueuedConnection;
  private readonly send: (command: Command, stream?: unknown) => unknown;

  /**
   * Throws at once if ioredis' connection no longer has the parts a batch works on.
   * `afterTurnFlush` runs once a turn's batch is handed to the connection from the check phase:
   * where the connection's writes are held to a turn's end (write-coalescing.ts), it lets them
   * go at once, not a loop turn later.
   */
  constructor(
    redis: Redis,
    readonly afterTurnFlush?: () => void,
  ) {
    const connection = redis as unknown as Partial<QueuedConnection>;
    if (
      typeof connection.sendCommand !== "function" ||
      typeof connection.commandQueue?.unshift !== "function" ||
      !("condition" in connection)
    ) {
      throw new TypeError(
        "ioredis' connection has an unexpected shape: PUBLISHes cannot be batched",
      );
    }
    this.connection = connection as QueuedConnection;
    const send = connection.sendCommand;
    this.send = (command, stream) => send.call(connection, command, stream);
    const batcher = this;
    connection.sendCommand = function sendAfterPublishes(
      this: QueuedConnection,
      command: Command,
      stream?: unknown,
    ) {
      batcher.flush();
      return send.call(this, command, stream);
    };
  }

  /** Queues `PUBLISH channel message`; `answered` is called with Redis' answer. */
  publish(channel: string, message: Buffer, answered: PublishAnswered): void {
    this.reserve(frameBytes(channel, message));
    this.starts.push(this.end - this.start);
    this.end = writeFrame(this.slab, this.end, channel, message);
    if (this.answers.push(answered) === 1) setImmediate(flushBatcher, this);
  }

  /** Sends the pending batch, if any. */
  flush(): void {
    const answers = this.answers;
    if (answers.length === 0) return;
    const batch = new PublishBatch(
      this.connection,
      this.slab.subarray(this.start, this.end),
      this.starts,
      answers,
    );
    this.start = this.end;
    this.starts = [];
    this.answers = [];
    this.send(batch);
  }

  /**
   * Room for `bytes` more: a new slab when needed, the pending batch's bytes copied over. A batch
   * can grow large (a reply chunk's answers let many publishers' reads go on in one run): a slab
   * that must take one over is twice its size, so each byte is copied a bounded number of times.
   */
  private reserve(bytes: number): void {
    if (this.end + bytes <= this.slab.length) return;
    const pending = this.end - this.start;
    const next = Buffer.allocUnsafeSlow(Math.max(SLAB_BYTES, 2 * (pending + bytes)));
    this.slab.copy(next, 0, this.start, this.end);
    this.slab = next;
    this.start = 0;
    this.end = pending;
  }
}

function flushBatcher(batcher: PublishBatcher): void {
  batcher.flush();
  batcher.afterTurnFlush?.();
}
