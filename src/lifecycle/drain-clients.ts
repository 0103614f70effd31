import type { Aedes, Client } from "aedes";
import {
  closeWithoutWill,
  closeWithWill,
  type DisconnectReason,
  registeredClients,
} from "../engine/aedes-internals.js";
import { ReasonCode } from "../errors.js";
import type { Logger } from "../observability/logger.js";

/** How often a drain closes its next batch of clients. */
const DRAIN_TICK_MS = 100;

export interface DrainOptions {
  /** Spread the disconnects over this long; 0 disconnects everyone at once. */
  drainMs: number;
  publishWills: boolean;
  /** Sent to MQTT 5 clients with 0x9C (use another server); absent: 0x8B (shutting down). */
  serverReference?: string | undefined;
}

/**
 * Disconnects every client of the broker, spread evenly over the drain window so that a fleet
 * moving to other nodes arrives there as a steady stream rather than a reconnect storm.
 */
export async function drainClients(
  broker: Aedes,
  options: DrainOptions,
  log: Logger,
): Promise<void> {
  const clients = registeredClients(broker);
  const { serverReference } = options;
  const reason: DisconnectReason =
    serverReference === undefined
      ? { reasonCode: ReasonCode.ServerShuttingDown }
      : { reasonCode: ReasonCode.UseAnotherServer, serverReference };
  const closeClient = options.publishWills ? closeWithWill : closeWithoutWill;
  const close = (client: Client) => closeClient(client, reason);
  if (clients.length === 0) return;
  // Batches at most every DRAIN_TICK_MS, sized so that the last one leaves one interval
  // before the window ends.
  const interval = Math.max(DRAIN_TICK_MS, options.drainMs / clients.length);
  const perTick =
    options.drainMs === 0
      ? clients.length
      : Math.ceil((clients.length * interval) / options.drainMs);
  log.info(
    { event: "drain.started", clients: clients.length, drainMs: options.drainMs, perTick },
    `disconnecting ${clients.length} clients over ${options.drainMs} ms`,
  );
  let next = 0;
  while (next < clients.length) {
    const batch = clients.slice(next, next + perTick);
    next += batch.length;
    await Promise.all(batch.filter((c) => !c.closed).map(close));
    if (next < clients.length) await delay(interval);
  }
  log.info({ event: "drain.finished", clients: clients.length }, "all clients disconnected");
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
