import type { Redis } from "ioredis";

type SubscriptionCommand = "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe";
const COMMANDS: readonly SubscriptionCommand[] = [
  "subscribe",
  "psubscribe",
  "unsubscribe",
  "punsubscribe",
];

/** Channels of one Redis command at most: a reply per channel comes back either way. */
const MAX_CHANNELS_PER_COMMAND = 1_000;

type Callback = (error: Error | null, count?: number) => void;
type Issue = (...channels: string[]) => Promise<unknown>;

interface Batch {
  command: SubscriptionCommand;
  channels: string[];
  callbacks: Callback[];
}

/**
 * Gathers the (P)(UN)SUBSCRIBEs issued on a subscriber connection during one turn of the event
 * loop into one command per run of the same kind, in the order they were issued.
 *
 * mqemitter-redis sends one command per MQTT filter: a client re-subscribing to 100 command
 * topics after a reconnect meant 100 SUBSCRIBEs (and on leaving 100 UNSUBSCRIBEs), each its own
 * socket write and Redis command, which made the Redis round of a subscribe storm the node's
 * largest cost. Each caller still gets its callback, with the batch's outcome. ioredis' own
 * re-subscription after a reconnect goes through here too.
 */
export class SubscriptionBatcher {
  private queued: Batch[] = [];
  private afterFlush: Array<() => void> = [];
  private readonly issue = new Map<SubscriptionCommand, Issue>();

  constructor(connection: Redis) {
    const target = connection as unknown as Record<SubscriptionCommand, Issue>;
    for (const command of COMMANDS) {
      const original = target[command];
      this.issue.set(command, (...channels) => original.apply(connection, channels));
      Object.defineProperty(connection, command, {
        value: (...args: unknown[]) => this.enqueue(command, args),
        configurable: true,
        writable: true,
      });
    }
  }

  /**
   * Runs `fn` once the commands queued so far are written (at once if none is): a command `fn`
   * sends is answered after theirs.
   */
  afterQueued(fn: () => void): void {
    if (this.queued.length === 0) fn();
    else this.afterFlush.push(fn);
  }

  private enqueue(command: SubscriptionCommand, args: unknown[]): Promise<number> {
    const callback =
      typeof args[args.length - 1] === "function" ? (args.pop() as Callback) : undefined;
    const channels = args.flat().map(String);
    let done: Promise<number>;
    if (channels.length === 0) {
      // Without channels, UNSUBSCRIBE means all of them: sent on its own, after the queue.
      this.flush();
      done = this.send(command, []);
    } else {
      done = new Promise<number>((resolve, reject) => {
        const last = this.queued[this.queued.length - 1];
        const batch =
          last && last.command === command && last.channels.length < MAX_CHANNELS_PER_COMMAND
            ? last
            : undefined;
        const settle: Callback = (error, count) => (error ? reject(error) : resolve(count ?? 0));
        if (this.queued.length === 0) setImmediate(() => this.flush());
        if (batch) {
          batch.channels.push(...channels);
          batch.callbacks.push(settle);
        } else this.queued.push({ command, channels, callbacks: [settle] });
      });
    }
    // As ioredis does: with a callback, a failure goes there (and is no unhandled rejection).
    if (callback)
      done.then(
        (count) => callback(null, count),
        (error: Error) => callback(error),
      );
    return done;
  }

  private send(command: SubscriptionCommand, channels: string[]): Promise<number> {
    const issue = this.issue.get(command);
    if (!issue) return Promise.reject(new Error(`no ${command} on this connection`));
    return issue(...channels).then(Number);
  }

  private flush(): void {
    const batches = this.queued;
    this.queued = [];
    for (const batch of batches) {
      this.send(batch.command, batch.channels).then(
        (count) => {
          for (const callback of batch.callbacks) callback(null, count);
        },
        (error: Error) => {
          for (const callback of batch.callbacks) callback(error);
        },
      );
    }
    const after = this.afterFlush;
    this.afterFlush = [];
    for (const fn of after) fn();
  }
}
