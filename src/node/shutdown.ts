import type { Aedes } from "aedes";
import { drainClients } from "../lifecycle/drain-clients.js";
import type { ShutdownPhase } from "../lifecycle/run-phases.js";
import type { Logger } from "../observability/logger.js";
import type { Listener } from "../transport/listener.js";

/** What a node's shutdown closes, each part absent when the node never got that far. */
export interface ShutdownParts {
  /** Turns the node not-ready and stops its watchers (first: /readyz says 503 at once). */
  stopServing(): void;
  listeners: readonly Listener[];
  broker: Aedes | undefined;
  publishWills: boolean;
  /** `shutdown.serverReference`: where draining MQTT 5 clients are sent (0x9C). */
  serverReference?: string | undefined;
  closeAdmin(): Promise<void>;
  closeBackend(): Promise<void>;
  closeHttp(): Promise<void>;
}

/**
 * A node's shutdown as named phases, each with a time bound: not ready, stop accepting,
 * disconnect clients spread over `drainMs`, then close the admin API, the broker, Redis and
 * the probes, in that order.
 */
export function shutdownPhases(
  parts: ShutdownParts,
  drainMs: number,
  log: Logger,
): ShutdownPhase[] {
  const { broker } = parts;
  return [
    { name: "not-ready", timeoutMs: 1_000, run: async () => parts.stopServing() },
    // Before the drain: a refused TCP connect is what a load balancer redispatches to another
    // node unseen, and what every client retries (MQTT.js stops at a CONNACK refusal).
    {
      name: "stop-accepting",
      timeoutMs: 5_000,
      run: async () => {
        await Promise.all(parts.listeners.map((l) => l.stopAccepting()));
      },
    },
    {
      name: "disconnect-clients",
      timeoutMs: drainMs + 5_000,
      run: async () => {
        if (!broker) return;
        const { publishWills, serverReference } = parts;
        await drainClients(broker, { drainMs, publishWills, serverReference }, log);
      },
    },
    { name: "close-admin", timeoutMs: 2_000, run: () => parts.closeAdmin() },
    {
      name: "close-broker",
      timeoutMs: 5_000,
      run: () =>
        new Promise<void>((resolve) => (broker ? broker.close(() => resolve()) : resolve())),
    },
    { name: "close-redis", timeoutMs: 2_000, run: () => parts.closeBackend() },
    { name: "close-http", timeoutMs: 2_000, run: () => parts.closeHttp() },
  ];
}
