import { setTimeout as pause } from "node:timers/promises";
import { type Logger, pino } from "pino";
import { resolveConfig } from "../src/config/load-config.js";
import { SluiceNode } from "../src/node.js";

export interface RunningNode {
  node: SluiceNode;
  /** URL of the first listener of each type, e.g. urls.tcp = "mqtt://127.0.0.1:40123". */
  urls: Partial<Record<"tcp" | "tls" | "ws" | "wss", string>>;
  httpUrl: string;
  stop(): Promise<void>;
}

const SCHEMES = { tcp: "mqtt", tls: "mqtts", ws: "ws", wss: "wss" } as const;

/**
 * Starts a node in this process on ephemeral loopback ports. `raw` is a config document as a
 * YAML file would hold it; listeners default to one TCP listener, anonymous access is on.
 * Logs go nowhere unless a `logger` is given (or TEST_LOG_LEVEL is set).
 */
export async function startNode(
  raw: Record<string, unknown> = {},
  configDir = process.cwd(),
  options: { logger?: Logger } = {},
): Promise<RunningNode> {
  const document = {
    listeners: [{ type: "tcp", host: "127.0.0.1", port: 0 }],
    http: { host: "127.0.0.1", port: 0 },
    auth: { allowAnonymous: true },
    shutdown: { drainSeconds: 0 },
    ...raw,
    // The test shares this process' event loop with the node: its own work (and a busy
    // machine) must not read as the node's overload, unless a test asks for that.
    limits: {
      overload: { eventLoopDelayMs: 60_000, heapUsedRatio: 1 },
      ...(raw.limits as Record<string, unknown> | undefined),
    },
  };
  const { config } = resolveConfig(document, { configDir, env: {} });
  const logger = options.logger ?? pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
  const node = await SluiceNode.start(config, logger);
  const urls: RunningNode["urls"] = {};
  for (const { type, address } of node.addresses.listeners) {
    const path = type === "ws" || type === "wss" ? pathOf(config.listeners, type) : "";
    urls[type] ??= `${SCHEMES[type]}://127.0.0.1:${address.port}${path}`;
  }
  return {
    node,
    urls,
    httpUrl: `http://127.0.0.1:${node.addresses.http.port}`,
    stop: () => node.close(),
  };
}

function pathOf(listeners: ReadonlyArray<{ type: string; path?: string }>, type: string): string {
  return listeners.find((l) => l.type === type)?.path ?? "/mqtt";
}

/** Resolves once the node's /readyz answers 200 (after a failover), polled every 100 ms, bounded. */
export async function readyWithin(node: RunningNode, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const status = await fetch(`${node.httpUrl}/readyz`).then(
      (r) => r.status,
      () => 0,
    );
    if (status === 200) return;
    await pause(100);
  }
  throw new Error(`node not ready within ${ms} ms`);
}
