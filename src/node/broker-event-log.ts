import type { Aedes, Client } from "aedes";
import { PacketViolationError } from "../engine/packet-guard.js";
import { PublishDeniedError } from "../errors.js";
import type { ClientContexts } from "../mqtt/client-context.js";
import type { Logger } from "../observability/logger.js";
import type { SluiceMetrics } from "../observability/metrics.js";

/**
 * Turns aedes' events into log lines and metrics, and catches its 'error' event (an
 * EventEmitter 'error' without a listener would throw and take the process down).
 */
export function logBrokerEvents(
  broker: Aedes,
  deps: { contexts: ClientContexts; metrics: SluiceMetrics; log: Logger },
): void {
  const { contexts, metrics, log } = deps;
  broker.on("client", (client: Client) => {
    const context = contexts.get(client);
    log.debug(
      {
        event: "client.connected",
        clientId: client.id,
        listener: context?.listener,
        remoteAddress: context?.remoteAddress,
        proxyAddress: context?.proxyAddress,
      },
      "client connected",
    );
  });
  broker.on("clientDisconnect", (client: Client) => {
    log.debug({ event: "client.disconnected", clientId: client.id }, "client disconnected");
  });
  const onClientError = (client: Client, error: Error): void => {
    if (error instanceof PacketViolationError) {
      metrics.markProtocolError(error.violation);
      log.info(
        {
          event: "client.protocol_violation",
          violation: error.violation,
          clientId: client.id ?? undefined,
          remoteAddress: contexts.get(client)?.remoteAddress,
        },
        error.message,
      );
      return;
    }
    log.debug(
      { event: "client.error", clientId: client.id ?? undefined, err: error },
      "client connection error",
    );
  };
  broker.on("clientError", onClientError);
  broker.on("connectionError", onClientError);
  broker.on("keepaliveTimeout", (client: Client) => {
    log.debug({ event: "client.keepalive_timeout", clientId: client.id }, "keepalive expired");
  });
  (broker as unknown as NodeJS.EventEmitter).on("error", (error: Error) => {
    if (error instanceof PublishDeniedError) {
      // Another survivor claimed a dead node's will first: expected, not an error.
      log.debug({ event: "will.claimed_elsewhere" }, "will published by another node");
      return;
    }
    log.error({ event: "broker.error", err: error }, "broker error");
  });
}
