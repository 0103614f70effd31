import type { Client } from "aedes";
import { takeoverTopic } from "../cluster/client-ownership.js";
import { DISCONNECT_TOPIC } from "../cluster/session-directory.js";
import {
  closeWithoutWill,
  closeWithWill,
  hasSubscriptions,
  registeredClient,
  registeredClients,
  subscribeToTopic,
} from "../engine/aedes-internals.js";
import { asError, ReasonCode } from "../errors.js";
import { auditSubject } from "../mqtt/broker-rules.js";
import type { Logger } from "../observability/logger.js";
import { DeviceEnforcement } from "../registry/device-enforcement.js";
import { REGISTRY_TOPIC } from "../registry/device-registry.js";
import type { NodeParts } from "./node-parts.js";

export interface ClusterSignalsDeps extends NodeParts {
  /** Whether the node serves clients now (a gap while starting or draining needs no recovery). */
  serving(): boolean;
}

/**
 * What nodes tell each other over the cluster's pub/sub, and what this node does when Redis
 * comes and goes: takeovers of its connections, registry changes (cache, revocations, CRL),
 * admin disconnects from any node, the recovery after its subscription was cut, and the
 * ownership check after Redis returns.
 */
export class ClusterSignals {
  private enforcement: DeviceEnforcement<Client> | undefined;
  private readonly log: Logger;

  constructor(private readonly deps: ClusterSignalsDeps) {
    this.log = deps.log.child({ module: "node" });
  }

  /** Subscribes the node to the signals that apply to it, and follows Redis' state. */
  async listen(): Promise<void> {
    const { broker, backend, devices, contexts, audit, crl, log } = this.deps;
    const ownership = backend.ownership;
    if (ownership) {
      await subscribeToTopic(broker, takeoverTopic(this.deps.config.nodeId), (payload) =>
        ownership.takeoverReceived(payload),
      );
    }
    if (devices) {
      const enforcement = new DeviceEnforcement<Client>(
        devices,
        {
          connected: () =>
            registeredClients(broker).map((client) => ({
              client,
              identity: contexts.get(client)?.identity,
            })),
          revoke: (client, _identity, reason) => {
            audit.revoked(auditSubject(contexts.get(client)), reason);
            void closeWithoutWill(client);
          },
          applyCrl: (pem) => crl.apply(pem),
        },
        log.child({ module: "registry" }),
      );
      this.enforcement = enforcement;
      await subscribeToTopic(broker, REGISTRY_TOPIC, (payload) =>
        enforcement.changeReceived(payload),
      );
      await enforcement.loadCrl();
    }
    if (backend.kind === "redis") {
      await subscribeToTopic(broker, DISCONNECT_TOPIC, (payload) => {
        const client = registeredClient(broker, payload.toString("utf8"));
        if (client) this.disconnectByAdmin(client);
      });
    }
    backend.fabric?.on("state", (up) => {
      if (up) this.reconcileOwnership();
    });
    backend.fabric?.on("subscriber-restored", () => this.recoverPubSubGap());
    backend.fence?.on("fenced", () => this.letGoOfClients());
  }

  /**
   * The node fenced itself (RedisFence): it cannot reach Redis, and the rest of the cluster will
   * soon count it as gone. Its clients are closed so that they reconnect, through the load
   * balancer, to a node that reaches Redis; without their wills, which stay stored: the
   * survivors publish them once this node's lease is gone, unless the clients are back first.
   * MQTT 5 clients are told to use another server.
   */
  private letGoOfClients(): void {
    const clients = registeredClients(this.deps.broker);
    this.log.warn(
      { event: "fence.clients_closed", clients: clients.length },
      "fenced: closing every client connection so that it moves to a node that reaches Redis",
    );
    for (const client of clients) {
      void closeWithoutWill(client, { reasonCode: ReasonCode.UseAnotherServer });
    }
  }

  /** An admin closed the client: as any server-side close, its will goes out. */
  disconnectByAdmin(client: Client): void {
    this.log.info(
      { event: "client.disconnected_by_admin", clientId: client.id },
      "disconnected by an admin",
    );
    void closeWithWill(client);
  }

  /**
   * This node's Redis subscription was down for a while: messages for its clients and other
   * nodes' subscription changes published meanwhile never reached it. Persistent sessions with
   * subscriptions are closed (without their wills) so that they resume from their stored
   * queues, which did receive those messages; the node's view of the cluster's subscriptions
   * is read again. Clean sessions keep their connections: MQTT keeps nothing for them to resume.
   */
  private recoverPubSubGap(): void {
    const { broker, backend, devices } = this.deps;
    const log = this.log;
    const fabric = backend.fabric;
    if (!fabric || !this.deps.serving()) return;
    const sessions = registeredClients(broker).filter(
      (client) => !client.clean && hasSubscriptions(client),
    );
    log.warn(
      { event: "pubsub.gap", persistentSessions: sessions.length },
      "Redis subscription was interrupted: moving persistent sessions to their stored queues",
    );
    for (const client of sessions) void closeWithoutWill(client);
    // Registry change messages may have been missed too.
    devices?.forgetAll();
    this.enforcement
      ?.loadCrl()
      .catch((error: unknown) =>
        log.error(
          { event: "registry.crl_failed", err: asError(error) },
          "could not reload the CRL",
        ),
      );
    const started = Date.now();
    fabric.resyncSubscriptions().then(
      (subscriptions) =>
        log.info(
          { event: "pubsub.resynced", subscriptions, ms: Date.now() - started },
          "cluster subscriptions read again from Redis",
        ),
      (error: unknown) =>
        log.error(
          { event: "pubsub.resync_failed", err: asError(error) },
          "could not read the cluster's subscriptions again; retried at the next reconnect",
        ),
    );
  }

  /** After Redis comes back: close connections taken over elsewhere while it was away. */
  private reconcileOwnership(): void {
    this.deps.backend.ownership
      ?.reconcile()
      .catch((error: unknown) =>
        this.log.warn(
          { event: "ownership.reconcile_failed", err: asError(error) },
          "could not check client ownership against Redis; retried when Redis is back",
        ),
      );
  }
}

/** Subscribes the node itself (not a client) to a cluster signal topic. */
