import type { AddressInfo } from "node:net";
import type { ConnectAdmission } from "../admission/connect-admission.js";
import type { ListenerConfig } from "../config/schema.js";
import type { EnhancedAuth } from "../engine/enhanced-auth.js";
import { PacketGuard } from "../engine/packet-guard.js";
import type { SubscribePacer } from "../engine/subscribe-pacer.js";
import { ClusterBackpressure } from "../limits/cluster-backpressure.js";
import { PublishLimiter } from "../limits/publish-limiter.js";
import type { SocketByteMeter } from "../observability/socket-byte-meter.js";
import { createListener } from "../transport/create-listener.js";
import type { Listener } from "../transport/listener.js";
import { ConnectionIntake } from "./connection-intake.js";
import type { NodeParts } from "./node-parts.js";

export interface OpenListeners {
  listeners: Listener[];
  addresses: Array<{ type: ListenerConfig["type"]; address: AddressInfo }>;
}

export interface ListenerDeps extends NodeParts {
  admission: ConnectAdmission;
  subscribePacer: SubscribePacer;
  byteMeter: SocketByteMeter;
  /** Whether the node takes connections now (not while starting, draining or fenced). */
  accepting(): boolean;
  enhancedAuth?: EnhancedAuth | undefined;
}

/**
 * The connection intake (socket quotas, packet guard, publish limits) and every configured
 * listener on it, each bound in turn.
 */
export async function openListeners(deps: ListenerDeps): Promise<OpenListeners> {
  const { config, broker, backend, contexts, metrics, audit, crl } = deps;
  const { limits } = config;
  const log = deps.log.child({ module: "transport" });
  const publishLimits =
    limits.publish &&
    new PublishLimiter(limits.publish, {
      metrics,
      audit,
      log: deps.log.child({ module: "limits" }),
      ...(backend.limitsRedis ? { redis: backend.limitsRedis } : {}),
    });
  const fabric = backend.fabric;
  if (fabric) metrics.watchClusterLoad(fabric.load);
  const backpressure =
    fabric &&
    config.redis &&
    new ClusterBackpressure(
      config.redis.backpressure,
      fabric.load,
      metrics,
      deps.log.child({ module: "cluster" }),
    );
  const intake = new ConnectionIntake({
    broker,
    quotas: backend.quotas,
    contexts,
    metrics,
    byteMeter: deps.byteMeter,
    packetGuard: new PacketGuard(limits),
    publishLimits,
    backpressure,
    admission: deps.admission,
    subscribePacer: deps.subscribePacer,
    ownership: backend.ownership,
    devices: deps.devices,
    accepting: deps.accepting,
    connectTimeoutMs: limits.connectTimeoutMs,
    answerRefusals: limits.connections.answerRefusals,
    enhancedAuth: deps.enhancedAuth,
    log: deps.log.child({ module: "admission" }),
  });
  const settings = {
    maxPacketBytes: limits.maxPacketBytes,
    connectTimeoutMs: limits.connectTimeoutMs,
    registryCrl: () => crl.current,
  };
  const listeners = config.listeners.map((listenerConfig, index) =>
    createListener(
      listenerConfig,
      index,
      {
        admitSocket: (socket, origin, transport) =>
          intake.admit(socket, origin.remoteAddress, transport),
        onConnection: (connection) => intake.accept(connection),
        onRejected: (reason, error) => {
          metrics.markConnectionRejected(reason);
          log.debug({ event: "connection.rejected", reason, err: error }, "connection refused");
        },
      },
      settings,
    ),
  );
  const addresses: OpenListeners["addresses"] = [];
  for (const listener of listeners) {
    const address = await listener.listen().catch(async (error: unknown) => {
      // One port taken: the ones already bound are given back before the start fails.
      await Promise.all(listeners.map((l) => l.stopAccepting().catch(() => {})));
      throw error;
    });
    addresses.push({ type: listener.config.type, address });
    log.info(
      {
        event: "listener.started",
        type: listener.config.type,
        host: address.address,
        port: address.port,
      },
      `${listener.config.type} listener on ${address.address}:${address.port}`,
    );
  }
  crl.serveTo(listeners);
  return { listeners, addresses };
}
