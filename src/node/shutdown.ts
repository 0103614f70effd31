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
 * A node's shutdown as named phases, each with a time bound: not ready (new sockets refused),
 * disconnect clients spread over `drainMs`, stop accepting, then close the admin API, the
 * broker, Redis and the probes, in that order.
 */
export function shutdownPhases(
  parts: ShutdownParts,
  drainMs: number,
  log: Logger,
): ShutdownPhase[] {
  const { broker } = parts;
  return [
    { name: "not-ready", timeoutMs: 1_000, run: async () => parts.stopServing() },
    {
      name: "disconnect-clients",
      timeoutMs: drainMs + 5_000,
      run: async () => {
        if (!broker) return;
        const { publishWills, serverReference } = parts;
        await drainClients(broker, { drainMs, publishWills, serverReference }, log);
      },
    },
    // After the drain: until then a socket that still arrives is refused with a CONNACK
    // (0x8B, or 0x9C with the Server Reference) rather than a reset.
    {
      name: "stop-accepting",
      timeoutMs: 5_000,
      run: async () => {
        await Promise.all(parts.listeners.map((l) => l.stopAccepting()));
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
