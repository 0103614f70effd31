import type { Socket } from "node:net";
import type { Aedes, Client } from "aedes";
import type { ConnectAdmission } from "../admission/connect-admission.js";
import type { ConnectionQuotas } from "../admission/connection-quotas.js";
import {
  HANDSHAKE_REFUSAL_ANSWER_BOUNDS,
  quotaRefusal,
  REFUSAL_ANSWER_BOUNDS,
  type Refusal,
  type RefusalAnswerSettings,
  RefusalAnswers,
} from "../admission/refusal-answers.js";
import { SampledRefusalLog } from "../admission/refusal-log.js";
import type { ClientOwnership } from "../cluster/client-ownership.js";
import type { ListenerType } from "../config/schema.js";
import { closeWithWill } from "../engine/aedes-internals.js";
import { hardenClient } from "../engine/engine-hardening.js";
import type { EnhancedAuth } from "../engine/enhanced-auth.js";
import type { PacketGuard } from "../engine/packet-guard.js";
import { encodePublishesFor } from "../engine/publish-encoder.js";
import type { SubscribePacer } from "../engine/subscribe-pacer.js";
import { ReasonCode } from "../errors.js";
import type { ClusterBackpressure } from "../limits/cluster-backpressure.js";
import type { PublishLimiter } from "../limits/publish-limiter.js";
import { auditSubject } from "../mqtt/broker-rules.js";
import type { ClientContexts } from "../mqtt/client-context.js";
import type { Logger } from "../observability/logger.js";
import type { SluiceMetrics } from "../observability/metrics.js";
import type { SocketByteMeter } from "../observability/socket-byte-meter.js";
import { protocolLabel } from "../protocol/protocol-version.js";
import type { DeviceRegistry } from "../registry/device-registry.js";
import { type ClientConnection, rawSocket, type SocketAdmission } from "../transport/listener.js";

export interface ConnectionIntakeDeps {
  broker: Aedes;
  quotas: ConnectionQuotas;
  contexts: ClientContexts;
  metrics: SluiceMetrics;
  byteMeter: SocketByteMeter;
  packetGuard: PacketGuard;
  publishLimits: PublishLimiter | undefined;
  /** In a cluster: pauses publishers while Redis is behind the node. */
  backpressure: ClusterBackpressure | undefined;
  admission: ConnectAdmission;
  /** Gates a connection's SUBSCRIBEs from the first one parsed (node-wide pacing). */
  subscribePacer: SubscribePacer;
  ownership: ClientOwnership | undefined;
  devices: DeviceRegistry | undefined;
  /** Whether the node takes connections now (not while starting, draining or fenced). */
  accepting(): boolean;
  /** `limits.connectTimeoutMs`, which also caps how long a refused socket is read. */
  connectTimeoutMs: number;
  /** `limits.connections.answerRefusals`: quota refusals get a CONNACK (else a close). */
  answerRefusals: boolean;
  /** MQTT 5 enhanced authentication (AUTH packets before the CONNECT reaches aedes). */
  enhancedAuth?: EnhancedAuth | undefined;
  log: Logger;
}

/**
 * How a socket becomes an aedes client: socket quotas once per socket, before a byte of MQTT or
 * of a TLS handshake is read; then the hand-over to aedes with Sluice's layers (context, packet
 * guard, publish limits); and, when the socket closes, the release of all it held.
 */
export class ConnectionIntake {
  /**
   * Admitted sockets not yet handed to aedes, with the address their quota counts against; a
   * handed-over connection's context keeps it instead, so idle connections hold no entry here.
   */
  private readonly awaitingHandOver = new Map<Socket, string>();
  /** The 'close' listener of every admitted socket, which it is called on. */
  private readonly onAdmittedSocketClose: (this: Socket) => void;
  /** CONNACKs for refused sockets where affordable: on plain TCP, and after a handshake. */
  private readonly plainAnswers: RefusalAnswers<ListenerType>;
  private readonly handshakeAnswers: RefusalAnswers<ListenerType>;
  private readonly refusalLog: SampledRefusalLog;

  constructor(private readonly deps: ConnectionIntakeDeps) {
    const intake = this;
    this.onAdmittedSocketClose = function onClose(this: Socket) {
      intake.socketClosed(this);
    };
    deps.broker.on("client", (client: Client) => this.registered(client));
    const answers = (bounds: RefusalAnswerSettings) =>
      new RefusalAnswers<ListenerType>(
        { ...bounds, deadlineMs: Math.min(bounds.deadlineMs, deps.connectTimeoutMs) },
        {
          overloaded: () => deps.admission.beforeAuthentication() !== undefined,
          counted: (outcome, transport) => deps.metrics.markRefusalAnswer(outcome, transport),
        },
      );
    this.plainAnswers = answers(REFUSAL_ANSWER_BOUNDS);
    this.handshakeAnswers = answers(HANDSHAKE_REFUSAL_ANSWER_BOUNDS);
    this.refusalLog = new SampledRefusalLog(deps.log);
  }

  /**
   * An admitted socket is counted until it closes. One refused by a socket quota is answered
   * with a CONNACK when the answers' budget of its `transport` allows, else closed at once.
   */
  admit(socket: Socket, ip: string, transport: ListenerType): SocketAdmission {
    const { quotas, metrics } = this.deps;
    // Starting, draining or fenced: closed, not answered. A closed connection is what every
    // client retries and a load balancer redispatches; a CONNACK refusal is final to many
    // (MQTT.js stops reconnecting), and these states pass.
    if (socket.destroyed || !this.deps.accepting()) {
      socket.destroy();
      return "refused";
    }
    const rejection = quotas.admit(ip);
    if (rejection !== undefined) {
      metrics.markConnectionRejected(rejection);
      this.refusalLog.refused(rejection, ip, transport);
      if (!this.deps.answerRefusals) {
        socket.destroy();
        return "refused";
      }
      return this.refuse(socket, ip, quotaRefusal(rejection), transport);
    }
    // Everything a connection's end releases, in this one listener, shared by every socket: a
    // socket admitted but never handed over (a failed TLS handshake) must give its quota back
    // too, and each listener of its own cost an idle connection its closure and context. `on`,
    // not `once`: a socket emits 'close' once, and once() allocates a wrapper per connection.
    this.awaitingHandOver.set(socket, ip);
    socket.on("close", this.onAdmittedSocketClose);
    return "admitted";
  }

  /**
   * A TLS handshake or an HTTP upgrade costs far more than a TCP accept: those refusals answer
   * from their own, smaller budget.
   */
  private refuse(
    socket: Socket,
    ip: string,
    refusal: Refusal,
    transport: ListenerType,
  ): SocketAdmission {
    const answers = transport === "tcp" ? this.plainAnswers : this.handshakeAnswers;
    return answers.begin(socket, ip, refusal, transport) ?? "refused";
  }

  /** A connection the listener admitted and made ready for MQTT: handed to aedes. */
  accept(connection: ClientConnection): void {
    if (!this.deps.accepting()) {
      connection.stream.destroy();
      return;
    }
    const { broker, contexts, metrics, byteMeter, packetGuard, publishLimits } = this.deps;
    const { listener, socket } = connection;
    metrics.markConnectionOpened(listener);
    byteMeter.track(socket);
    const admitted = rawSocket(socket);
    const admittedAddress = this.awaitingHandOver.get(admitted);
    this.awaitingHandOver.delete(admitted);
    encodePublishesFor(connection.stream);
    const client = broker.handle(connection.stream, connection.request);
    hardenClient(client);
    const context = contexts.attach(client, connection, admittedAddress);
    packetGuard.install(client);
    this.deps.enhancedAuth?.install(client);
    context.endPublishLimits = publishLimits?.attach(client, {
      identity: () => context.identity,
      subject: () => auditSubject(context),
      // Closed like a protocol error: the will goes out (the device misbehaved, it was not moved).
      disconnect: () => void closeWithWill(client, { reasonCode: ReasonCode.MessageRateTooHigh }),
    });
    this.deps.backpressure?.attach(client);
    this.deps.subscribePacer.watch(client);
  }

  /** aedes registered the client (CONNACK sent or being sent). */
  private registered(client: Client): void {
    this.deps.ownership?.registered(client);
    const context = this.deps.contexts.get(client);
    if (context !== undefined && context.protocol === "pending") {
      context.protocol = protocolLabel(client.version);
      this.deps.metrics.markConnectAccepted(context.listener, context.protocol);
    }
    const identity = context?.identity;
    if (identity?.device !== undefined && identity.username !== undefined) {
      // Best effort, off the CONNECT path: a failed write loses one last-seen time.
      this.deps.devices?.store.touch(identity.username, new Date().toISOString()).catch(() => {});
    }
  }

  /** An admitted socket closed: its quota, and what its connection held if it was handed over. */
  private socketClosed(socket: Socket): void {
    const { quotas, contexts, byteMeter, metrics, admission, ownership } = this.deps;
    const context = contexts.ofSocket(socket);
    if (context === undefined) {
      const ip = this.awaitingHandOver.get(socket);
      this.awaitingHandOver.delete(socket);
      if (ip !== undefined) quotas.release(ip);
      return;
    }
    if (context.admittedAddress !== undefined) quotas.release(context.admittedAddress);
    byteMeter.closed(context.socket);
    metrics.markConnectionClosed(context.listener, context.protocol);
    if (context.countedUsername !== undefined) admission.release(context.countedUsername);
    ownership?.ended(context.client);
    context.endPublishLimits?.();
  }
}
