import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { CleanupRegistry } from "../lifecycle/cleanup-registry.js";
import { withTimeout } from "../lifecycle/cleanup-registry.js";
import type {
  StormCommand,
  StormCounts,
  SubscribeWorkerCommand,
  SubscribeWorkerReport,
} from "./subscribe-worker.js";

const WORKER = fileURLToPath(new URL("./subscribe-worker.js", import.meta.url));

export interface StormResult extends StormCounts {
  clients: number;
  /** Clients with every filter answered. */
  complete: number;
  /** First SUBSCRIBE written to last SUBACK read, across all processes (0: none answered). */
  elapsedMs: number;
  timedOut: boolean;
}

interface Worker {
  child: ChildProcess;
  reports: SubscribeWorkerReport[];
  listeners: Set<() => void>;
  latest?: StormCounts;
  stop: () => Promise<void>;
}

/**
 * The storming clients, spread over several generator processes (subscribe-worker.ts) so that
 * the generator's event loop is not what the figure measures.
 */
export class SubscriberSwarm {
  private constructor(private readonly workers: Worker[]) {}

  static start(cleanup: CleanupRegistry, processes: number): SubscriberSwarm {
    const workers = Array.from({ length: processes }, (_, i): Worker => {
      const child = fork(WORKER, [], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
      const worker: Worker = {
        child,
        reports: [],
        listeners: new Set(),
        stop: cleanup.addChild(`subscribe generator ${i}`, child),
      };
      child.on("message", (report: SubscribeWorkerReport) => {
        // Progress reports are only ever read as the latest one.
        if (report.type === "progress") worker.latest = report;
        else worker.reports.push(report);
        for (const listener of [...worker.listeners]) listener();
      });
      return worker;
    });
    return new SubscriberSwarm(workers);
  }

  /**
   * Every process opens its share of `clients`, each of which subscribes to its filters;
   * resolves when all are answered or `timeoutMs` has passed.
   */
  async storm(
    options: Omit<StormCommand, "type" | "clientIdPrefix" | "clients"> & {
      clients: number;
      runId: string;
    },
    onProgress: (counts: StormCounts) => void,
  ): Promise<StormResult> {
    const { runId, clients, ...rest } = options;
    const count = this.workers.length;
    this.workers.forEach((w, i) => {
      const share = Math.floor(clients / count) + (i < clients % count ? 1 : 0);
      this.send(w, { type: "storm", ...rest, clients: share, clientIdPrefix: `${runId}-${i}-` });
    });
    const progress = setInterval(() => onProgress(this.latestCounts()), 2_000);
    try {
      const reports = await withTimeout(
        Promise.all(this.workers.map((w) => this.next(w, "stormed"))),
        options.timeoutMs + 10_000,
        "subscribe storm",
      );
      const sum = (key: keyof StormCounts | "complete"): number =>
        reports.reduce((n, r) => n + r[key], 0);
      const firsts = reports.map((r) => r.firstSubscribeAt).filter((t) => t > 0);
      const lasts = reports.map((r) => r.lastSubackAt).filter((t) => t > 0);
      return {
        clients,
        connected: sum("connected"),
        connectFailed: sum("connectFailed"),
        granted: sum("granted"),
        refused: sum("refused"),
        complete: sum("complete"),
        elapsedMs:
          firsts.length > 0 && lasts.length > 0 ? Math.max(...lasts) - Math.min(...firsts) : 0,
        timedOut: reports.some((r) => r.timedOut),
      };
    } finally {
      clearInterval(progress);
    }
  }

  /** Every client sends DISCONNECT and closes; resolves when all processes have done so. */
  async leave(): Promise<void> {
    for (const w of this.workers) this.send(w, { type: "leave" });
    await withTimeout(
      Promise.all(this.workers.map((w) => this.next(w, "left"))),
      10_000,
      "clients leaving",
    );
  }

  async close(): Promise<void> {
    for (const w of this.workers) this.send(w, { type: "close" });
    await Promise.allSettled(this.workers.map((w) => w.stop()));
  }

  private latestCounts(): StormCounts {
    const total: StormCounts = { connected: 0, connectFailed: 0, granted: 0, refused: 0 };
    for (const w of this.workers) {
      const last = w.reports.find((r) => r.type === "stormed") ?? w.latest;
      if (last) {
        total.connected += last.connected;
        total.connectFailed += last.connectFailed;
        total.granted += last.granted;
        total.refused += last.refused;
      }
    }
    return total;
  }

  private send(worker: Worker, command: SubscribeWorkerCommand): void {
    if (worker.child.connected) worker.child.send(command);
  }

  private next<T extends SubscribeWorkerReport["type"]>(
    worker: Worker,
    type: T,
  ): Promise<Extract<SubscribeWorkerReport, { type: T }>> {
    const find = (): Extract<SubscribeWorkerReport, { type: T }> | undefined =>
      worker.reports.find((r): r is Extract<SubscribeWorkerReport, { type: T }> => r.type === type);
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const found = find();
        if (!found) return;
        worker.listeners.delete(check);
        resolve(found);
      };
      worker.listeners.add(check);
      worker.child.once("exit", (code) =>
        reject(new Error(`subscribe generator exited (${code})`)),
      );
      check();
    });
  }
}
