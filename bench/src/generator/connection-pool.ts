import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { CleanupRegistry } from "../lifecycle/cleanup-registry.js";
import { withTimeout } from "../lifecycle/cleanup-registry.js";
import type { AttemptCounts, ConnectWorkerCommand, ConnectWorkerReport } from "./connect-worker.js";

const WORKER = fileURLToPath(new URL("./connect-worker.js", import.meta.url));

export interface OpenResult extends AttemptCounts {
  /** Wall time from the first CONNECT sent to the last CONNACK, across all processes. */
  elapsedMs: number;
  open: number;
}

export interface RestoreResult extends AttemptCounts {
  dropped: number;
  /** When the last dropped connection was accepted again (epoch ms), undefined if never. */
  restoredAt: number | undefined;
}

/** Where each connection group goes: `count` clients to `url`. */
export interface ConnectionGroup {
  url: string;
  count: number;
  clientIdPrefix: string;
}

interface Worker {
  child: ChildProcess;
  group: ConnectionGroup;
  reports: ConnectWorkerReport[];
  listeners: Array<() => void>;
  stop: () => Promise<void>;
}

const add = (a: AttemptCounts, b: AttemptCounts): AttemptCounts => ({
  accepted: a.accepted + b.accepted,
  refusedServerUnavailable: a.refusedServerUnavailable + b.refusedServerUnavailable,
  refusedOther: a.refusedOther + b.refusedOther,
  failed: a.failed + b.failed,
});
const zero = (): AttemptCounts => ({
  accepted: 0,
  refusedServerUnavailable: 0,
  refusedOther: 0,
  failed: 0,
});

/**
 * Idle MQTT connections held by several generator processes (connect-worker.ts), so that one
 * process's event loop or file-descriptor limit is not what a connection figure measures.
 */
export class ConnectionPool {
  private constructor(private readonly workers: Worker[]) {}

  /** Forks one process per group (split groups beforehand to use more processes). */
  static start(cleanup: CleanupRegistry, groups: readonly ConnectionGroup[]): ConnectionPool {
    const workers = groups.map((group, i): Worker => {
      const child = fork(WORKER, [], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
      const worker: Worker = {
        child,
        group,
        reports: [],
        listeners: [],
        stop: cleanup.addChild(`connect generator ${i}`, child),
      };
      child.on("message", (report: ConnectWorkerReport) => {
        worker.reports.push(report);
        for (const listener of worker.listeners) listener();
      });
      return worker;
    });
    return new ConnectionPool(workers);
  }

  /** Opens every group's connections at once; resolves when each has its CONNACK or failed. */
  async open(window: number, timeoutMs: number): Promise<OpenResult> {
    for (const w of this.workers)
      this.send(w, {
        type: "open",
        url: w.group.url,
        clientIdPrefix: w.group.clientIdPrefix,
        count: w.group.count,
        window,
      });
    const reports = await withTimeout(
      Promise.all(this.workers.map((w) => this.next(w, "opened"))),
      timeoutMs,
      "opening connections",
    );
    let totals = zero();
    let open = 0;
    for (const r of reports) {
      totals = add(totals, r);
      open += r.open;
    }
    const startedAt = Math.min(...reports.map((r) => r.startedAt));
    const finishedAt = Math.max(...reports.map((r) => r.finishedAt));
    return { ...totals, open, elapsedMs: finishedAt - startedAt };
  }

  /** From now on, the processes holding `fromUrl`'s connections reconnect them to `toUrl`. */
  failOver(fromUrl: string, toUrl: string, retryMs: number): void {
    for (const w of this.workers)
      if (w.group.url === fromUrl) this.send(w, { type: "reconnect-to", url: toUrl, retryMs });
  }

  /**
   * Waits until `expected` dropped connections are connected again (or the timeout), and
   * returns the attempt counts and the moment the last one was accepted.
   */
  async restored(expected: number, timeoutMs: number): Promise<RestoreResult> {
    const deadline = Date.now() + timeoutMs;
    const latest = (): Array<ConnectWorkerReport & { type: "restored" }> =>
      this.workers.flatMap((w) => {
        const found = w.reports.filter(
          (r): r is ConnectWorkerReport & { type: "restored" } => r.type === "restored",
        );
        const last = found[found.length - 1];
        return last ? [last] : [];
      });
    for (;;) {
      const reports = latest();
      const dropped = reports.reduce((n, r) => n + r.dropped, 0);
      if (dropped >= expected || Date.now() > deadline) {
        let totals = zero();
        for (const r of reports) totals = add(totals, r);
        return {
          ...totals,
          dropped,
          restoredAt:
            dropped >= expected ? Math.max(...reports.map((r) => r.restoredAt)) : undefined,
        };
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Reconnection progress (dropped, reconnected so far), from the workers' last reports. */
  progress(): { dropped: number; reconnected: number } {
    let dropped = 0;
    let reconnected = 0;
    for (const w of this.workers) {
      const last = [...w.reports]
        .reverse()
        .find((r) => r.type === "progress" || r.type === "restored");
      if (last?.type === "progress") {
        dropped += last.dropped;
        reconnected += last.reconnected;
      } else if (last?.type === "restored") {
        dropped += last.dropped;
        reconnected += last.dropped;
      }
    }
    return { dropped, reconnected };
  }

  async close(): Promise<void> {
    for (const w of this.workers) this.send(w, { type: "close" });
    await Promise.allSettled(this.workers.map((w) => w.stop()));
  }

  private send(worker: Worker, command: ConnectWorkerCommand): void {
    if (worker.child.connected) worker.child.send(command);
  }

  private next<T extends ConnectWorkerReport["type"]>(
    worker: Worker,
    type: T,
  ): Promise<Extract<ConnectWorkerReport, { type: T }>> {
    const find = (): Extract<ConnectWorkerReport, { type: T }> | undefined =>
      worker.reports.find((r): r is Extract<ConnectWorkerReport, { type: T }> => r.type === type);
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const found = find();
        if (found) resolve(found);
      };
      worker.listeners.push(check);
      worker.child.once("exit", (code) => reject(new Error(`connect generator exited (${code})`)));
      check();
    });
  }
}

/** Splits `count` connections to `url` over `processes` groups with distinct client ids. */
export function splitGroups(
  url: string,
  count: number,
  processes: number,
  clientIdPrefix: string,
): ConnectionGroup[] {
  const groups: ConnectionGroup[] = [];
  for (let i = 0; i < processes; i++) {
    const share = Math.floor(count / processes) + (i < count % processes ? 1 : 0);
    if (share > 0) groups.push({ url, count: share, clientIdPrefix: `${clientIdPrefix}${i}-` });
  }
  return groups;
}
