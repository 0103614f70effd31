/**
 * The linger of the batches a CONNECT passes through (lockout counters, client-id claims,
 * session reads): in a storm of 5,000 CONNECTs over Redis, 1 ms took a call from about 2.5 to
 * about 10 CONNECTs and the node's CPU per CONNECT from about 290 to 240 µs.
 */
export const CONNECT_LINGER_MS = 1;

/** An item waiting in a batch, with the promise it is answered on. */
export interface Waiting<Item, Result> {
  item: Item;
  resolve(result: Result): void;
  reject(error: unknown): void;
}

export interface TurnBatchOptions {
  /**
   * At most one call per key awaits its answer (the promise `flush` returns): what comes
   * meanwhile waits for that answer and goes as the next call. Under load a call then carries
   * what came over a round trip rather than a turn (CONNECTs are often read one per turn), for
   * at most one round trip of waiting; order is kept, each call going after the one before.
   */
  paced?: boolean;
  /**
   * Paced: while calls carry more than one item (a storm: CONNECTs come faster than their
   * round trips), a call gathers for this long before it goes, rather than to the end of the
   * turn. Fuller calls cost less per item (each call is a command to build, send, parse and
   * settle); one item alone goes at the end of its turn, so quiet times wait for nothing.
   */
  lingerMs?: number;
}

/**
 * Gathers work over one turn of the event loop (the packets read from every socket in it) and
 * hands it over at its end, in calls: items of one call share its `call` key (a Redis Cluster
 * slot group), in the order they came.
 */
export class TurnBatches<Item, Result> {
  private pending = new Map<string, Array<Waiting<Item, Result>>>();
  /** Paced: the keys whose call awaits its answer. */
  private readonly inFlight = new Set<string>();
  private scheduled = false;
  /** The most items a call carried in the last flush that sent one (linger: a storm?). */
  private lastCallItems = 0;

  constructor(
    /** Paced: returns the promise of the call's answer. */
    private readonly flush: (call: Array<Waiting<Item, Result>>) => unknown,
    private readonly options: TurnBatchOptions = {},
  ) {}

  add(call: string, item: Item): Promise<Result> {
    let waiting = this.pending.get(call);
    if (waiting === undefined) {
      waiting = [];
      this.pending.set(call, waiting);
      if (!this.inFlight.has(call)) this.schedule();
    }
    const list = waiting;
    return new Promise((resolve, reject) => list.push({ item, resolve, reject }));
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    const { lingerMs } = this.options;
    if (lingerMs !== undefined && this.lastCallItems > 1) setTimeout(this.flushAll, lingerMs);
    else setImmediate(this.flushAll);
  }

  private readonly flushAll = (): void => {
    this.scheduled = false;
    let most = 0;
    const pending = this.pending;
    this.pending = new Map();
    // A key whose call awaits its answer keeps gathering, before anything below adds to it.
    for (const [key, call] of pending) if (this.inFlight.has(key)) this.pending.set(key, call);
    for (const [key, call] of pending) {
      if (this.inFlight.has(key)) continue;
      if (call.length > most) most = call.length;
      const answered = this.flush(call);
      if (this.options.paced && answered instanceof Promise) this.awaitAnswer(key, answered);
    }
    if (most > 0) this.lastCallItems = most;
  };

  private awaitAnswer(key: string, answered: Promise<unknown>): void {
    this.inFlight.add(key);
    const settled = (): void => {
      this.inFlight.delete(key);
      // At the end of this turn: the answer's own continuations may add to the next call.
      if (this.pending.has(key)) this.schedule();
    };
    answered.then(settled, settled);
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
