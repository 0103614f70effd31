import { type Logger, pino } from "pino";
import type { LogLine } from "./sluice-process.js";

/**
 * A pino logger whose JSON lines a test can read and wait for, to observe an in-process node
 * through its logs (audit lines, connection events) the way an operator would.
 */
export class LogCapture {
  readonly lines: LogLine[] = [];
  readonly logger: Logger;
  private waiters: Array<{ match: (line: LogLine) => boolean; resolve: (l: LogLine) => void }> = [];

  constructor(level: pino.LevelWithSilent = "debug") {
    this.logger = pino(
      { level },
      {
        write: (text: string) => {
          const line = JSON.parse(text) as LogLine;
          this.lines.push(line);
          this.waiters = this.waiters.filter((w) => {
            if (!w.match(line)) return true;
            w.resolve(line);
            return false;
          });
        },
      },
    );
  }

  /** Resolves with the first line, past or future, that matches. */
  waitFor(match: (line: LogLine) => boolean): Promise<LogLine> {
    const seen = this.lines.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => this.waiters.push({ match, resolve }));
  }
}
