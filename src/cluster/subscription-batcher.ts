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
 * largest cost. Each caller still gets its callback, with the batch's outcome.
 */
export function batchSubscriptions(connection: Redis): void {
  let queued: Batch[] = [];
  const issue = new Map<SubscriptionCommand, Issue>();
  const flush = (): void => {
    const batches = queued;
    queued = [];
    for (const batch of batches) {
      const send = issue.get(batch.command);
      if (!send) continue;
      send(...batch.channels).then(
        (count) => {
          for (const callback of batch.callbacks) callback(null, Number(count));
        },
        (error: Error) => {
          for (const callback of batch.callbacks) callback(error);
        },
      );
    }
  };
  const target = connection as unknown as Record<SubscriptionCommand, Issue>;
  for (const command of COMMANDS) {
    const original = target[command];
    issue.set(command, (...channels) => original.apply(connection, channels));
    const batched = (...args: unknown[]): Promise<number> => {
      const callback =
        typeof args[args.length - 1] === "function" ? (args.pop() as Callback) : undefined;
      const channels = args.flat().map(String);
      // Without channels, UNSUBSCRIBE means all of them: not something to merge into a batch.
      if (channels.length === 0)
        return (original as (...a: unknown[]) => Promise<number>).apply(
          connection,
          callback ? [callback] : [],
        );
      const done = new Promise<number>((resolve, reject) => {
        const last = queued[queued.length - 1];
        const batch =
          last && last.command === command && last.channels.length < MAX_CHANNELS_PER_COMMAND
            ? last
            : undefined;
        const settle: Callback = (error, count) => (error ? reject(error) : resolve(count ?? 0));
        if (queued.length === 0) setImmediate(flush);
        if (batch) {
          batch.channels.push(...channels);
          batch.callbacks.push(settle);
        } else queued.push({ command, channels, callbacks: [settle] });
      });
      // As ioredis does: with a callback, a failure goes there (and is no unhandled rejection).
      if (callback)
        done.then(
          (count) => callback(null, count),
          (error: Error) => callback(error),
        );
      return done;
    };
    Object.defineProperty(connection, command, {
      value: batched,
      configurable: true,
      writable: true,
    });
  }
}
