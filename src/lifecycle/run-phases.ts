import type { Logger } from "../observability/logger.js";

export interface ShutdownPhase {
  name: string;
  /** A phase that overruns is abandoned (and logged) so that shutdown always finishes. */
  timeoutMs: number;
  run(): Promise<void>;
}

/** Runs named phases in order, each bounded by its timeout; a failing phase never stops the next. */
export async function runPhases(log: Logger, phases: readonly ShutdownPhase[]): Promise<void> {
  for (const phase of phases) {
    const started = Date.now();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), phase.timeoutMs);
    });
    try {
      const outcome = await Promise.race([phase.run().then(() => "done" as const), timeout]);
      if (outcome === "timeout") {
        log.warn(
          { event: "shutdown.phase_timeout", phase: phase.name, timeoutMs: phase.timeoutMs },
          `shutdown phase ${phase.name} timed out`,
        );
      } else {
        log.debug(
          { event: "shutdown.phase_done", phase: phase.name, ms: Date.now() - started },
          `shutdown phase ${phase.name} done`,
        );
      }
    } catch (error) {
      log.error(
        { event: "shutdown.phase_failed", phase: phase.name, err: error },
        `shutdown phase ${phase.name} failed`,
      );
    } finally {
      clearTimeout(timer);
    }
  }
}
