import { randomBytes } from "node:crypto";
import type { EventEmitter } from "node:events";
import { Redis } from "ioredis";
import { FIRST_ATTEMPT, LATER_ATTEMPT } from "./attempt-deliveries.js";
import {
  type EchoCheck,
  EchoFilter,
  filterStreamData,
  frameParts,
  type MessageFrame,
  sameBytes,
} from "./echo-filter.js";
import {
  decodeMessageAt,
  type EmittedMessage,
  ENVELOPE_ID_START,
  type EnvelopeFormat,
  echoCheck,
  encodeEnvelope,
  encodeNumberedEnvelope,
  envelopeIdEndAt,
  envelopeIdOf,
} from "./envelope.js";
import type { InboundReservations, ReservedPublisher } from "./inbound-qos2.js";
import { LocalFilters } from "./local-filters.js";
import { RecentIds } from "./recent-ids.js";

type Done = (error?: Error) => void;

/**
 * Reads a message from the subscription (its channel at `channel[channelStart, channelEnd)`,
 * its envelope at `data[start, end)`, both may be places in one socket read): the message to
 * deliver, or undefined for one not to (an echo, a copy, one that is not an envelope).
 */
type Accept = (
  channel: Buffer,
  channelStart: number,
  channelEnd: number,
  data: Buffer,
  start: number,
  end: number,
) => EmittedMessage | undefined;

/** The parts of an mqemitter-redis instance that local-first delivery works on. */
export interface RedisEmitterShape {
  closed?: boolean;
  emit(message: EmittedMessage, done?: Done): unknown;
  /** mqemitter's own emit: delivers to this process' listeners only. */
  _emit(message: EmittedMessage, done?: Done): unknown;
  /** Where mqemitter-redis reports a failed PUBLISH that has no callback. */
  _onError?: Done;
  /** Channels mqemitter-redis skips (Sentinel's hello). */
  _ignoredTopicsSet?: Set<string>;
}

/**
 * Where each message goes, by topic: a PUBLISH on the fabric's publisher connection, or on a
 * Redis Cluster an SPUBLISH to the topic's shard channel. `answered` is called once Redis has
 * answered it (with the error, if it failed).
 */
export interface Publisher {
  publish(channel: string, message: Buffer, answered: (error?: Error) => void): void;
}

/** A Publisher over a connection's own promise-returning `publish` (or `spublish`). */
export function promisePublisher(
  send: (channel: string, message: Buffer) => Promise<unknown>,
): Publisher {
  return {
    publish(channel, message, answered) {
      send(channel, message).then(() => answered(), answered);
    },
  };
}

/** One PUBLISH through a Publisher, as a promise (for the rare resend, not the hot path). */
function publishOnce(publisher: Publisher, channel: string, message: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    publisher.publish(channel, message, (error) =>
      error === undefined ? resolve() : reject(error),
    );
  });
}

/**
 * The PUBLISHes this node has sent and Redis has not answered yet: its outbound pipeline, one
 * of the bounds of cluster backpressure.
 */
export class PendingPublishes {
  bytes = 0;
  private readonly answeredListeners: Array<() => void> = [];

  sent(bytes: number): void {
    this.bytes += bytes;
  }

  answered(bytes: number): void {
    this.bytes -= bytes;
    for (const listener of this.answeredListeners) listener();
  }

  /** Called after every answer (cheap listeners only: it runs once per message). */
  onAnswered(listener: () => void): void {
    this.answeredListeners.push(listener);
  }
}

/**
 * A PUBLISH that Redis did not take, of a message this node's own subscribers (and the stored
 * queues aedes wrote before it) already have: `forward()` sends the same envelope again, to the
 * other nodes alone, under the same id (a node that did get the first drops it as seen). Its
 * name and message are the failure's.
 */
export class UnforwardedError extends Error {
  constructor(
    cause: Error,
    readonly forward: () => Promise<unknown>,
  ) {
    super(cause.message, { cause });
    this.name = cause.name;
  }
}

/** Inbound QoS 2 messages published once (inbound-qos2.ts): found, and published, by these. */
export interface ReservedPublishing {
  reservations: InboundReservations;
  publisher: ReservedPublisher;
}

/** The emitted message's fields a reservation is found by. */
interface ReservableMessage {
  clientId?: unknown;
  qos?: unknown;
  payload?: unknown;
}

const ATTEMPT_CODES = [FIRST_ATTEMPT.charCodeAt(0), LATER_ATTEMPT.charCodeAt(0)];

/** Whether an id starting with this byte may name an inbound QoS 2 attempt (inbound-qos2.ts). */
function mayNameAttempt(first: number | undefined): boolean {
  return first !== undefined && ATTEMPT_CODES.includes(first);
}

/**
 * aedes' notices of each CONNECT, disconnection, SUBSCRIBE and UNSUBSCRIBE
 * (`$SYS/<broker>/new/clients`, `.../disconnect/clients`, `.../new/subscribes`,
 * `.../new/unsubscribes`): over Redis they were a PUBLISH per packet (a
 * tenth of a node's CPU in a subscribe storm, 6 % while clients connect), and nothing in a
 * cluster reads another node's: a Redis-backed node fences client ids itself, so aedes' takeover
 * by `new/clients` is off there (closeOnPeerConnect: false). They stay on the node that made them.
 */
export function isNodeLocalNotice(topic: string): boolean {
  return (
    topic.startsWith("$SYS/") &&
    (topic.endsWith("/new/clients") ||
      topic.endsWith("/disconnect/clients") ||
      topic.endsWith("/new/subscribes") ||
      topic.endsWith("/new/unsubscribes"))
  );
}

/**
 * On a single connection (not a Cluster's sharded subscriber), echoes are cut from its bytes
 * before ioredis parses them (echo-filter.ts), and the other messages are read there too. When
 * `receive` is the only listener of their kind, they are accepted as places in the socket's
 * read (no Buffer made for the channel or the envelope: 60-100 ns each), all those of one read
 * first, then delivered in their order: each pass runs with its code and data at hand, where
 * decoding between deliveries took twice its time alone. Otherwise they are emitted as ioredis
 * emits them (`message`/`pmessage` when listened to, `messageBuffer`/`pmessageBuffer`).
 * `accept` still drops any echo that passes.
 */
function dropEchoesUnparsed(
  subscriber: Redis,
  echoes: EchoCheck,
  accept: Accept,
  deliver: (message: EmittedMessage) => void,
): void {
  const filtered = new WeakSet<object>();
  // accepted from the read being handled, not delivered yet
  const held: EmittedMessage[] = [];
  const flush = (): void => {
    try {
      for (let i = 0; i < held.length; i++) deliver(held[i] as EmittedMessage);
    } finally {
      held.length = 0;
    }
  };
  // Whether `receive` alone listens to messages, and to pattern messages: asked again only after
  // a listener came or went (two listenerCount calls per message were 0.5 % of a subscribers'
  // node's CPU). newListener is emitted before the listener is added: counted at the next frame.
  let counted = false;
  let messagesReceivedAlone = false;
  let patternsReceivedAlone = false;
  const recount = (): void => {
    counted = false;
  };
  subscriber.on("newListener", recount);
  subscriber.on("removeListener", recount);
  const message = (frame: MessageFrame): void => {
    const pattern = frame.patternStart >= 0;
    if (!counted) {
      counted = true;
      messagesReceivedAlone =
        subscriber.listenerCount("messageBuffer") === 1 &&
        subscriber.listenerCount("message") === 0;
      patternsReceivedAlone =
        subscriber.listenerCount("pmessageBuffer") === 1 &&
        subscriber.listenerCount("pmessage") === 0;
    }
    if (pattern ? patternsReceivedAlone : messagesReceivedAlone) {
      const { data } = frame;
      const { channelStart, channelEnd, payloadStart, payloadEnd } = frame;
      const accepted = accept(data, channelStart, channelEnd, data, payloadStart, payloadEnd);
      if (accepted !== undefined) held.push(accepted);
      return;
    }
    flush();
    const parts = frameParts(frame);
    if (parts.pattern === undefined) {
      if (subscriber.listenerCount("message") > 0) {
        subscriber.emit("message", parts.channel.toString(), parts.payload.toString());
      }
      subscriber.emit("messageBuffer", parts.channel, parts.payload);
      return;
    }
    const name = parts.pattern.toString();
    if (subscriber.listenerCount("pmessage") > 0) {
      subscriber.emit("pmessage", name, parts.channel.toString(), parts.payload.toString());
    }
    subscriber.emit("pmessageBuffer", name, parts.channel, parts.payload);
  };
  const install = (): void => {
    const stream = subscriber.stream;
    if (stream === undefined || filtered.has(stream)) return;
    filtered.add(stream);
    filterStreamData(stream, new EchoFilter(echoes), { message, flush });
  };
  subscriber.on("connect", install);
  if (subscriber.status === "connect" || subscriber.status === "ready") install();
}

export interface LocalFirstOptions {
  /** The outbound pipeline's bytes (cluster backpressure). */
  pending?: PendingPublishes;
  /** How this node writes its messages (it reads both formats). */
  format?: EnvelopeFormat;
  reserved?: ReservedPublishing;
  /**
   * Told of each message on the subscription that is not an envelope (a stray PUBLISH into
   * Redis, a node of another version): it is dropped, not delivered.
   */
  undecodable?: (channel: string, error: unknown) => void;
}

/**
 * Local-first delivery over mqemitter-redis: a message published on this node reaches this
 * node's subscribers at once, without the Redis round trip; other nodes get it once, through
 * Redis; this node drops its own echo before decoding it. mqemitter-redis keeps the
 * connections and the (P)SUBSCRIBEs; its receive handler is replaced (see below).
 *
 * - Order per publisher and topic holds for every subscriber: local ones get this node's
 *   messages in the order they were emitted, remote ones in the order of this node's PUBLISHes
 *   on one connection (on a Redis Cluster, a topic's SPUBLISHes all go to its shard channel's
 *   primary, on the one connection to it).
 * - Ack-after-durable holds: `done` (aedes' publish callback, which sends the PUBACK) runs once
 *   Redis has answered the PUBLISH, and Redis answers after handing the message to every
 *   subscribed connection.
 * - The envelope is mqemitter-redis' own (`{ id, msg }`), so nodes with and without local-first
 *   understand each other during a rolling upgrade. This node's ids start with a prefix unique
 *   to the process; an echo is recognized from its first bytes.
 * - Except an inbound QoS 2 message with a reserved packet identifier (`reserved`): it reaches
 *   this node's subscribers through Redis, its envelope id outside the echo prefix.
 */
export function deliverLocallyFirst<E extends RedisEmitterShape>(
  create: () => E,
  publisher: Publisher,
  subscriber: EventEmitter,
  options: LocalFirstOptions = {},
): E {
  const { pending = new PendingPublishes(), format = "msgpack", reserved, undecodable } = options;
  const origin = `${randomBytes(6).toString("base64url")}:`;
  const originBytes = Buffer.from(origin);
  let sequence = 0;

  const echoes = echoCheck(originBytes);

  // mqemitter-redis adds its handlers when created; they are replaced by `receive`, which does
  // what they did (skip Sentinel's hello channel, drop a message already seen under another
  // matching pattern, deliver) after dropping this node's echo unread, and decodes with msgpackr.
  const before = {
    message: new Set(subscriber.listeners("messageBuffer")),
    pattern: new Set(subscriber.listeners("pmessageBuffer")),
  };
  const emitter = create();
  const local = new LocalFilters(emitter);
  const { _ignoredTopicsSet: ignored } = emitter;
  if (!(ignored instanceof Set))
    throw new TypeError("mqemitter-redis has an unexpected shape: local-first cannot be installed");
  // mqemitter-redis' own window: 10,000 ids
  const seen = new RecentIds(10_000);
  // Compared as bytes: a channel decoded per message was 2 % of a receiving node's CPU in a
  // bench whose topics had the hello channel's length.
  const ignoredChannels = [...ignored].map((topic) => Buffer.from(topic));
  const isIgnored = (data: Buffer, start: number, end: number): boolean => {
    for (const bytes of ignoredChannels) {
      if (bytes.length === end - start && sameBytes(data, start, bytes)) return true;
    }
    return false;
  };
  const accept: Accept = (channel, channelStart, channelEnd, data, start, end) => {
    if (echoes.isEcho(data, start, end - start)) return undefined;
    if (isIgnored(channel, channelStart, channelEnd)) return undefined;
    let msg: EmittedMessage;
    try {
      msg = decodeMessageAt(data, start, end);
    } catch (error) {
      undecodable?.(channel.toString("utf8", channelStart, channelEnd), error);
      return undefined;
    }
    // the id as a string only when it is not a numbered one, or may name a QoS 2 attempt
    const idEnd = envelopeIdEndAt(data, start, end);
    let fresh = idEnd < 0 ? undefined : seen.addNumbered(data, start + ENVELOPE_ID_START, idEnd);
    fresh ??= seen.add(envelopeIdOf(data.subarray(start, end)));
    if (!fresh) return undefined;
    if (reserved !== undefined && (idEnd < 0 || mayNameAttempt(data[start + ENVELOPE_ID_START]))) {
      reserved.reservations.attempts.received(envelopeIdOf(data.subarray(start, end)), msg);
    }
    return msg;
  };
  const deliver = (msg: EmittedMessage): void => {
    emitter._emit(msg);
  };
  const receive = (channel: Buffer, payload: Buffer): void => {
    const msg = accept(channel, 0, channel.length, payload, 0, payload.length);
    if (msg !== undefined) deliver(msg);
  };
  for (const event of ["messageBuffer", "pmessageBuffer"] as const) {
    const existing = event === "messageBuffer" ? before.message : before.pattern;
    for (const listener of subscriber.listeners(event)) {
      if (!existing.has(listener)) subscriber.removeListener(event, listener as () => void);
    }
  }
  subscriber.on("messageBuffer", receive);
  subscriber.on("pmessageBuffer", (_pattern: Buffer, channel: Buffer, payload: Buffer) =>
    receive(channel, payload),
  );
  if (subscriber instanceof Redis) dropEchoesUnparsed(subscriber, echoes, accept, deliver);

  emitter.emit = (message: EmittedMessage, done?: Done): void => {
    if (emitter.closed) {
      done?.(new Error("mqemitter-redis is closed"));
      return;
    }
    if (isNodeLocalNotice(message.topic)) {
      emitter._emit(message, done);
      return;
    }
    const reservation = reserved?.reservations.of(
      (message as ReservableMessage).clientId,
      (message as ReservableMessage).qos,
      (message as ReservableMessage).payload,
    );
    if (reservation !== undefined && reserved !== undefined) {
      const id = reserved.reservations.envelopeId(reservation);
      const envelope = encodeEnvelope(id, message, format);
      const bytes = envelope.length;
      pending.sent(bytes);
      reserved.publisher.publish(reservation, message.topic, envelope, (error, published) => {
        pending.answered(bytes);
        const failure =
          error ??
          (published ? undefined : new Error("packet identifier taken over, not published"));
        if (failure === undefined) done?.();
        else if (done === undefined) emitter._onError?.(failure);
        else done(failure);
      });
      return;
    }
    if (local.mayMatch(message.topic)) emitter._emit(message);
    const envelope = encodeNumberedEnvelope(origin, ++sequence, message, format);
    const bytes = envelope.length;
    pending.sent(bytes);
    publisher.publish(message.topic, envelope, (error?: Error) => {
      pending.answered(bytes);
      if (error === undefined) done?.();
      else if (done === undefined) emitter._onError?.(error);
      else done(new UnforwardedError(error, () => publishOnce(publisher, message.topic, envelope)));
    });
  };
  return emitter;
}
