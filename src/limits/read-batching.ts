import { performance } from "node:perf_hooks";

/** Never written: waiting on it always times out, which makes the wait a plain sleep. */
const NEVER_NOTIFIED = new Int32Array(new SharedArrayBuffer(4));

/**
 * Makes the event loop take its input in batches: while started, it sleeps between two passes
 * over its connections, so that a pass begins at most every `gapMs`. A pass that took longer
 * is not followed by a sleep.
 *
 * Why: a node waiting for its subscribers' acknowledgements, with nothing else to read, wakes
 * for each PUBACK as it arrives (a client sends each on its own) and pays a read, a stream
 * event and a parser run per 4 bytes. Measured on the subscribers' node of two (issue 14): 0.9
 * reads per delivered message, a quarter of its CPU. Sleeping lets the kernel gather them: one
 * read per connection and pass. It is the node's interrupt moderation, and sleeping is the
 * point: under a CPU quota the quota is spent on deliveries instead, and without one the core
 * is free for other processes.
 *
 * The sleep blocks the thread, so it is short (at most `gapMs`) and only started while the node
 * waits anyway (SubscriptionThrottle). The loop still runs every pass: timers, probes and
 * every connection are served, at most `gapMs` late.
 */
export class ReadBatching {
  private passStartedAt = 0;
  private immediate: NodeJS.Immediate | undefined;
  private sleptTotalMs = 0;

  constructor(private readonly gapMs: number) {}

  /** Milliseconds slept since construction: work it did not do, for its event-loop figures. */
  get sleptMs(): number {
    return this.sleptTotalMs;
  }

  /** Whether passes are being batched now. */
  get started(): boolean {
    return this.immediate !== undefined;
  }

  start(): void {
    if (this.immediate !== undefined || this.gapMs <= 0) return;
    this.passStartedAt = performance.now();
    this.schedule();
  }

  stop(): void {
    if (this.immediate === undefined) return;
    clearImmediate(this.immediate);
    this.immediate = undefined;
  }

  /**
   * The check phase runs right after the loop's poll for input. Unreferenced, the immediate
   * neither keeps the process alive nor stops that poll from waiting for input: a pass that
   * waited a whole gap for its input does not sleep, and sparse input is read as it comes.
   */
  private schedule(): void {
    this.immediate = setImmediate(this.pass);
    this.immediate.unref();
  }

  private readonly pass = (): void => {
    const sleepMs = this.gapMs - (performance.now() - this.passStartedAt);
    if (sleepMs > 0) {
      const before = performance.now();
      Atomics.wait(NEVER_NOTIFIED, 0, 0, sleepMs);
      this.sleptTotalMs += performance.now() - before;
    }
    this.passStartedAt = performance.now();
    this.schedule();
  };
}
