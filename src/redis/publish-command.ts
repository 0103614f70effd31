import { Command, type Redis } from "ioredis";

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
  const ascii = isAscii(channel);
  const channelBytes = ascii ? channel.length : Buffer.byteLength(channel);
  const messageBytes = message.length;
  const frame = Buffer.allocUnsafe(
    HEAD.length + digits(channelBytes) + channelBytes + digits(messageBytes) + messageBytes + 9,
  );
  frame.set(HEAD, 0);
  let at = writeDecimal(frame, HEAD.length, channelBytes);
  at = crlf(frame, at);
  if (ascii) {
    for (let i = 0; i < channelBytes; i++) frame[at + i] = channel.charCodeAt(i);
    at += channelBytes;
  } else at += frame.write(channel, at, channelBytes, "utf8");
  at = crlf(frame, at);
  frame[at++] = 0x24; // $
  at = writeDecimal(frame, at, messageBytes);
  at = crlf(frame, at);
  frame.set(message, at);
  crlf(frame, at + messageBytes);
  return frame;
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

/**
 * A PUBLISH settled through a callback rather than a promise. ioredis makes every command a
 * promise (three closures, settled through a microtask), which the fabric then turned back
 * into aedes' publish callback with two more closures; here ioredis' resolve and reject call
 * `answered` directly. ioredis calls nothing else of a command it sends on a connection (no
 * pipeline, no transaction, no timeout here).
 */
class AnsweredPublishCommand extends Command {
  constructor(
    private readonly frame: Buffer,
    readonly answered: PublishAnswered,
  ) {
    super("publish");
    this.resolve = settleAnswered;
    this.reject = failAnswered;
  }

  override toWritable(): Buffer {
    return this.frame;
  }
}

// Command's constructor makes the promise in initPromise (private in its types): none here.
(AnsweredPublishCommand.prototype as unknown as { initPromise(): void }).initPromise = () => {};

function settleAnswered(this: AnsweredPublishCommand): void {
  this.answered();
}

function failAnswered(this: AnsweredPublishCommand, error: Error): void {
  this.answered(error);
}

/** Sends `PUBLISH channel message` on `redis`; `answered` is called with Redis' answer. */
export function sendAnsweredPublish(
  redis: Redis,
  channel: string,
  message: Buffer,
  answered: PublishAnswered,
): void {
  redis.sendCommand(new AnsweredPublishCommand(publishFrame(channel, message), answered));
}
