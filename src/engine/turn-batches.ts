/** An item waiting in a batch, with the promise it is answered on. */
export interface Waiting<Item, Result> {
  item: Item;
  resolve(result: Result): void;
  reject(error: unknown): void;
}

/**
 * Gathers work over one turn of the event loop (the packets read from every socket in it) and
 * hands it over at its end, in calls: items of one call share its `call` key (a Redis Cluster
 * slot group), in the order they came.
 */
export class TurnBatches<Item, Result> {
  private pending = new Map<string, Array<Waiting<Item, Result>>>();

  constructor(private readonly flush: (call: Array<Waiting<Item, Result>>) => void) {}

  add(call: string, item: Item): Promise<Result> {
    if (this.pending.size === 0) setImmediate(() => this.flushAll());
    let waiting = this.pending.get(call);
    if (waiting === undefined) {
      waiting = [];
      this.pending.set(call, waiting);
    }
    const list = waiting;
    return new Promise((resolve, reject) => list.push({ item, resolve, reject }));
  }

  private flushAll(): void {
    const pending = this.pending;
    this.pending = new Map();
    for (const call of pending.values()) this.flush(call);
  }
}

/** Items by session, in the order the sessions first came, each session's in order. */
export function bySession<Item extends { clientId: string }, Result>(
  call: Array<Waiting<Item, Result>>,
): Array<Array<Waiting<Item, Result>>> {
  const sessions = new Map<string, Array<Waiting<Item, Result>>>();
  for (const waiting of call) {
    const list = sessions.get(waiting.item.clientId);
    if (list === undefined) sessions.set(waiting.item.clientId, [waiting]);
    else list.push(waiting);
  }
  return [...sessions.values()];
}
