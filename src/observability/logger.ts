import { type Logger, pino } from "pino";
import type { LogLevel } from "../config/schema.js";
import { batchedStdout } from "./log-destination.js";

export type { Logger } from "pino";

export interface LoggerOptions {
  level: LogLevel;
  format: "auto" | "json" | "pretty";
  nodeId: string;
}

/** Fields whose values never reach a log line, at the top of a line's object. */
const SECRET_KEYS = ["password", "passphrase", "token", "authorization"] as const;
/** ... and one level down, in any field's object. */
const NESTED_SECRET_KEYS = ["password", "passphrase", "token"] as const;
const REDACTED = "[redacted]";

/**
 * Redaction for a child logger whose lines hold only flat fields (strings, numbers, booleans),
 * such as the audit log's: the top-level secrets alone. pino runs a wildcard path (`*.password`)
 * over every field of every line, cloning and parsing paths even for a string: for the audit
 * line of each CONNECT, 6 KB of garbage.
 */
export const FLAT_REDACTION = { paths: [...SECRET_KEYS], censor: REDACTED };

/**
 * The one pino root of a node. Components take `logger.child({ module })`; every line carries
 * a stable `event` field. Credentials are redacted even if a caller logs them by mistake.
 */
export function createLogger(options: LoggerOptions): Logger {
  const pretty =
    options.format === "pretty" || (options.format === "auto" && process.stdout.isTTY === true);
  return pino(
    {
      level: options.level,
      base: { node: options.nodeId },
      redact: {
        paths: [...SECRET_KEYS, ...NESTED_SECRET_KEYS.map((key) => `*.${key}`)],
        censor: REDACTED,
      },
      ...(pretty
        ? {
            transport: {
              target: "pino-pretty",
              options: { translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname" },
            },
          }
        : {}),
    },
    // a transport (pretty) writes from its own thread
    ...(pretty ? [] : [batchedStdout()]),
  );
}
