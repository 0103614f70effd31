import fastparallel from "fastparallel";
import type { Redis } from "ioredis";
import mqemitter from "mqemitter";
import mqemitterRedis from "mqemitter-redis";
import type { Logger } from "../observability/logger.js";
import type { EnvelopeFormat } from "./envelope.js";
import { type InboundReservations, reservedPublisher } from "./inbound-qos2.js";
import {
  deliverLocallyFirst,
  type PendingPublishes,
  type Publisher,
  promisePublisher,
  type RedisEmitterShape,
} from "./local-first.js";

/** What aedes needs of an emitter: mqemitter's API. */
export type Emitter = mqemitter.MQEmitter;

/** The queue state of an mqemitter that its releases work on. */
interface EmitterQueue {
  current: number;
  _doing: boolean;
  _messageQueue: unknown[];
  _messageCallbacks: unknown[];
  _do(message: unknown, callback: unknown): void;
  _released: () => void;
  _parallel: unknown;
}

/** aedes' own emitter for a node alone: messages of any depth, `+` matching an empty level. */
export function memoryEmitter(concurrency: number): Emitter {
  const emitter = mqemitter({ concurrency, matchEmptyLevels: true });
  releaseInLoop(emitter);
  return emitter;
}

export interface RedisEmitterOptions {
  /** The outbound pipeline's bytes (cluster backpressure). */
  pending?: PendingPublishes;
  /** How messages are written for the other nodes (by default msgpack: any version reads it). */
  format?: EnvelopeFormat;
  /** How each message is sent: by default a PUBLISH on the topic, on the publisher. */
  route?: Publisher;
  reservations?: InboundReservations;
  /** Called for each message on the subscription that was not an envelope (dropped). */
  undecodable?: () => void;
}

/** How often a run of undecodable messages is logged again, with the count since. */
const UNDECODABLE_LOG_MS = 60_000;

/**
 * Messages on the subscription that are not envelopes: each dropped and counted; the first
 * logged at once, the rest at most once a minute with their count, so that a flood of them
 * does not become a flood of log lines. Neither the payload nor the error's text (which
 * msgpackr fills with the data read) is logged.
 */
class UndecodableReport {
  private unlogged = 0;
  private loggedAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly log: Logger,
    private readonly counted: (() => void) | undefined,
  ) {}

  dropped(channel: string, error: unknown): void {
    this.counted?.();
    this.unlogged++;
    const now = performance.now();
    if (now - this.loggedAt < UNDECODABLE_LOG_MS) return;
    this.log.warn(
      {
        event: "redis.message_undecodable",
        channel,
        count: this.unlogged,
        error: error instanceof Error ? error.name : typeof error,
      },
      "a message on the Redis subscription is not a Sluice envelope (a PUBLISH from outside " +
        "Sluice, or a node of another version): dropped",
    );
    this.unlogged = 0;
    this.loggedAt = now;
  }
}

/**
 * mqemitter-redis on the fabric's own publisher and subscriber connections, delivering locally
 * first (local-first.ts). Its close() leaves
 * the connections to the fabric, which ends them whether or not Redis answers: the package's
 * own close() QUITs them and, during a Redis outage, neither called back nor handled the
 * failed QUIT (an unhandled rejection at every shutdown in an outage).
 *
 * `route` sends each message (by default a PUBLISH on the topic, on `publisher`); the
 * subscriber is anything that answers mqemitter-redis' (p)(un)subscribe calls and emits its
 * `messageBuffer`/`pmessageBuffer` events (on a Redis Cluster, the fabric's sharded subscriber).
 * With `reservations` (single Redis and Sentinel), reserved inbound QoS 2 messages go by their
 * publish script on `publisher` (inbound-qos2.ts).
 */
export function redisEmitter(
  publisher: Redis,
  subscriber: Redis,
  log: Logger,
  options: RedisEmitterOptions = {},
): Emitter {
  const {
    route = promisePublisher((channel, message) => publisher.publish(channel, message)),
    reservations,
    undecodable,
  } = options;
  const report = new UndecodableReport(log, undecodable);
  const emitter = deliverLocallyFirst(
    () =>
      mqemitterRedis({ pubConn: publisher, subConn: subscriber }) as unknown as Emitter &
        RedisEmitterShape & {
          state?: NodeJS.EventEmitter;
          closing?: boolean;
          _close?: (callback: () => void) => void;
        },
    route,
    subscriber,
    {
      ...(options.pending && { pending: options.pending }),
      ...(options.format && { format: options.format }),
      ...(reservations && {
        reserved: { reservations, publisher: reservedPublisher(publisher, reservations) },
      }),
      undecodable: (channel, error) => report.dropped(channel, error),
    },
  );
  // mqemitter-redis re-emits connection errors on its `state` emitter; without a listener there,
  // a failed reconnect during a Redis outage throws and takes the node down. The outage itself
  // is reported by the fabric, once per state change.
  const state = emitter.state;
  const closeEmitter = emitter._close;
  if (!state || typeof closeEmitter !== "function")
    throw new TypeError("mqemitter-redis has an unexpected shape: its errors cannot be guarded");
  state.on("error", (error: Error) =>
    log.debug({ event: "redis.emitter_error", err: error }, "redis emitter error"),
  );
  emitter.close = (callback: () => void) => {
    if (emitter.closed || emitter.closing) return callback();
    emitter.closing = true;
    closeEmitter.call(emitter, callback);
  };
  releaseInLoop(emitter);
  return emitter;
}

/**
 * A message whose listeners all answer synchronously is released inside mqemitter's `_do`,
 * which takes the next queued message inside that release, and so on: one stack frame per
 * queued message, until "Maximum call stack size exceeded" kills the process under a QoS 0
 * flood (mqemitter PR 204, unreleased). Releases that arrive while one is handled are counted
 * and taken in a loop instead. The release is both the emitter's `_released` and the callback
 * of its parallel runner, so both are replaced.
 */
function releaseInLoop(emitter: Emitter): void {
  const queue = emitter as unknown as EmitterQueue;
  if (
    typeof queue._do !== "function" ||
    typeof queue._released !== "function" ||
    !Array.isArray(queue._messageQueue) ||
    !Array.isArray(queue._messageCallbacks)
  ) {
    throw new TypeError("mqemitter has an unexpected shape: its release loop cannot be installed");
  }
  let releasing = false;
  let pending = 0;
  const released = (): void => {
    queue.current--;
    pending++;
    if (releasing) return;
    releasing = true;
    try {
      while (pending > 0) {
        pending--;
        const message = queue._messageQueue.shift();
        const callback = queue._messageCallbacks.shift();
        if (message) queue._do(message, callback);
        else queue._doing = false;
      }
    } finally {
      releasing = false;
    }
  };
  queue._released = released;
  queue._parallel = fastparallel({ results: false, released });
}
