/** What a node's /readyz answered while it was watched. */
export interface ReadinessFigures {
  polls: number;
  /** Answers other than 200 (503: not ready, e.g. its Redis down). */
  notReady: number;
  /** No answer within the timeout, or no connection: a load balancer's check fails as well. */
  failed: number;
  /** Milliseconds after the watch began of the first poll that was not a 200; null if none. */
  firstNotReadyMs: number | null;
}

export interface ReadinessWatchOptions {
  intervalMs: number;
  /** Per request: what a load balancer's health check would wait (Kubernetes' default is 1 s). */
  timeoutMs: number;
  /** The watch ends by itself after this long, stopped or not. */
  maxMs: number;
}

/**
 * Polls a Sluice node's /readyz, one request at a time, from start() until stop() (or maxMs):
 * whether a load balancer would have kept sending it clients throughout.
 */
export class ReadinessWatch {
  private stopped = false;
  private wake: (() => void) | undefined;
  private readonly figures: ReadinessFigures = {
    polls: 0,
    notReady: 0,
    failed: 0,
    firstNotReadyMs: null,
  };
  private readonly done: Promise<void>;

  private constructor(
    private readonly httpPort: number,
    private readonly options: ReadinessWatchOptions,
  ) {
    this.done = this.run();
  }

  static start(httpPort: number, options: ReadinessWatchOptions): ReadinessWatch {
    return new ReadinessWatch(httpPort, options);
  }

  async stop(): Promise<ReadinessFigures> {
    this.stopped = true;
    this.wake?.();
    await this.done;
    return { ...this.figures };
  }

  private async run(): Promise<void> {
    const startedAt = performance.now();
    const maxPolls = Math.ceil(this.options.maxMs / this.options.intervalMs);
    for (let i = 0; i < maxPolls && !this.stopped; i++) {
      if (performance.now() - startedAt > this.options.maxMs) return;
      const at = performance.now() - startedAt;
      const outcome = await this.poll();
      this.figures.polls++;
      if (outcome !== "ready") {
        if (outcome === "not-ready") this.figures.notReady++;
        else this.figures.failed++;
        this.figures.firstNotReadyMs ??= Math.round(at);
      }
      if (this.stopped) return;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.options.intervalMs);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  private async poll(): Promise<"ready" | "not-ready" | "failed"> {
    try {
      const response = await fetch(`http://127.0.0.1:${this.httpPort}/readyz`, {
        signal: AbortSignal.timeout(this.options.timeoutMs),
      });
      await response.arrayBuffer();
      return response.status === 200 ? "ready" : "not-ready";
    } catch {
      return "failed";
    }
  }
}
