import { type Logger, pino } from "pino";
import type { LogLevel } from "../config/schema.js";
import { batchedStdout } from "./log-destination.js";

export type { Logger } from "pino";

export interface LoggerOptions {
  level: LogLevel;
  format: "auto" | "json" | "pretty";
  nodeId: string;
}

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
        paths: [
          "password",
          "*.password",
          "passphrase",
          "*.passphrase",
          "token",
          "*.token",
          "authorization",
        ],
        censor: "[redacted]",
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
