import { Counter, collectDefaultMetrics, Gauge, Registry } from "prom-client";
import type { ListenerType } from "../config/schema.js";
import type { MqttProtocolLabel } from "../protocol/protocol-version.js";
import { type OwnershipConflictCause, PartitionSeries } from "./partition-metrics.js";
import { SharedGroupMetrics } from "./shared-group-metrics.js";
import { type SparkplugSeries, sparkplugSeries } from "./sparkplug-metrics.js";

/** Numbers the metrics read from the live node at scrape time instead of counting per event. */
export interface MetricsSources {
  /** Subscriptions held by the clients connected to this node. */
  subscriptionCount(): number;
  /** Retained messages in the store this node uses. */
  retainedCount(): Promise<number>;
  /** Bytes read from and written to client sockets since the last call (then reset). */
  takeSocketBytes(): { received: number; sent: number };
  /** Live nodes of the cluster, this one included (1 without Redis). */
  clusterNodes(): number;
}

/**
 * A node's Prometheus metrics, over its own Registry so that two nodes can live in one process.
 * Names are part of the public contract (DESIGN.md); every series carries the `node` label.
 */
export class SluiceMetrics {
  readonly registry = new Registry();
  private readonly connections: Gauge<"listener" | "protocol">;
  private readonly connectionsTotal: Counter<"listener">;
  private readonly connects: Counter<"protocol">;
  private readonly messagesReceived: Counter;
  private readonly messagesSent: Counter;
  /**
   * Per-message counts, added to their counters at scrape time: a prom-client inc() per
   * message (label hashing, validation) was measurable on the QoS 0 path.
   */
  private unreportedReceived = 0;
  private unreportedSent = 0;
  private readonly bytesReceived: Counter;
  private readonly bytesSent: Counter;
  private readonly connectionsRejected: Counter<"reason">;
  private readonly protocolErrors: Counter<"reason">;
  private readonly authFailures: Counter<"reason">;
  private readonly usernamesTargeted: Counter;
  private readonly aclDenied: Counter<"action">;
  private readonly redisUp: Gauge | undefined;
  private readonly backpressureSeconds: Counter | undefined;
  private readonly backpressureEpisodes: Counter | undefined;
  private readonly backpressureActive: Gauge | undefined;
  /** What the cluster-load gauges read at scrape time (set once the fabric exists). */
  private clusterLoad:
    | { pendingBytes(): number; lagBytes(): number; clusterLagBytes(): number }
    | undefined;
  private readonly subscriptionPausedSeconds: Counter | undefined;
  private readonly subscriptionPausedEpisodes: Counter | undefined;
  private readonly pausedSleepSeconds: Counter | undefined;
  private readonly subscriptionResets: Counter | undefined;
  private readonly sessionsExpired: Counter;
  private readonly publishThrottled: Counter;
  private readonly droppedMessages: Counter<"reason">;
  private readonly subscriptionsRefused: Counter<"reason">;
  /** Shared subscriptions' per-group series. */
  readonly shared: SharedGroupMetrics;
  private readonly sparkplug: SparkplugSeries = sparkplugSeries(this.registry);

  constructor(
    nodeId: string,
    listenerTypes: readonly ListenerType[],
    sources: MetricsSources,
    options: { redis: boolean } = { redis: false },
  ) {
    const registers = [this.registry];
    this.registry.setDefaultLabels({ node: nodeId });
    collectDefaultMetrics({ register: this.registry });

    this.connections = new Gauge({
      name: "sluice_connections",
      help: "Open client connections, by listener type and MQTT version (`pending` until the CONNECT is accepted)",
      labelNames: ["listener", "protocol"],
      registers,
    });
    for (const listener of new Set(listenerTypes)) {
      this.connections.set({ listener, protocol: "pending" }, 0);
    }
    this.connects = new Counter({
      name: "sluice_connects_total",
      help: "CONNECTs accepted (CONNACK 0) since start, by MQTT version",
      labelNames: ["protocol"],
      registers,
    });
    this.connectionsTotal = new Counter({
      name: "sluice_connections_total",
      help: "Client connections accepted since start, by listener type",
      labelNames: ["listener"],
      registers,
    });
    this.connectionsRejected = new Counter({
      name: "sluice_connections_rejected_total",
      help: "Connections refused, by reason",
      labelNames: ["reason"],
      registers,
    });
    this.protocolErrors = new Counter({
      name: "sluice_protocol_errors_total",
      help: "Connections closed for breaking the MQTT protocol, by reason",
      labelNames: ["reason"],
      registers,
    });
    this.authFailures = new Counter({
      name: "sluice_auth_failures_total",
      help: "Refused authentications, by reason",
      labelNames: ["reason"],
      registers,
    });
    this.usernamesTargeted = new Counter({
      name: "sluice_auth_username_targeted_total",
      help: "Usernames whose failed logins over every source address passed limits.authFailures.acrossSources.alertAfter",
      registers,
    });
    this.aclDenied = new Counter({
      name: "sluice_acl_denied_total",
      help: "Publishes, subscriptions and deliveries refused by authorization, by action",
      labelNames: ["action"],
      registers,
    });
    this.messagesReceived = new Counter({
      name: "sluice_messages_received_total",
      help: "PUBLISH packets received from clients",
      registers,
      collect: () => {
        if (this.unreportedReceived === 0) return;
        this.messagesReceived.inc(this.unreportedReceived);
        this.unreportedReceived = 0;
      },
    });
    this.messagesSent = new Counter({
      name: "sluice_messages_sent_total",
      help: "PUBLISH packets forwarded to clients",
      registers,
      collect: () => {
        if (this.unreportedSent === 0) return;
        this.messagesSent.inc(this.unreportedSent);
        this.unreportedSent = 0;
      },
    });
    const takeBytes = (): void => {
      const { received, sent } = sources.takeSocketBytes();
      if (received > 0) this.bytesReceived.inc(received);
      if (sent > 0) this.bytesSent.inc(sent);
    };
    this.bytesReceived = new Counter({
      name: "sluice_bytes_received_total",
      help: "Bytes read from client sockets (including TLS and WebSocket framing)",
      registers,
      collect: takeBytes,
    });
    this.bytesSent = new Counter({
      name: "sluice_bytes_sent_total",
      help: "Bytes written to client sockets (including TLS and WebSocket framing)",
      registers,
    });
    this.publishThrottled = new Counter({
      name: "sluice_publish_throttled_total",
      help: "Throttle episodes: times a client went over its publish limits and Sluice began pausing reads of its socket (one per episode, however many pauses it takes)",
      registers,
    });
    this.droppedMessages = new Counter({
      name: "sluice_dropped_messages_total",
      help: "Messages not delivered, by reason: slow_consumer (QoS 0 to a full socket), queue_full (QoS 1/2 past limits.queue.maxQueuedPerClient), packet_too_large (larger than an MQTT 5 client's Maximum Packet Size), undecodable (a message on the Redis subscription that is not a Sluice envelope)",
      labelNames: ["reason"],
      registers,
    });
    this.subscriptionsRefused = new Counter({
      name: "sluice_subscriptions_refused_total",
      help: "Subscription filters refused by a limit (SUBACK 0x80), by reason",
      labelNames: ["reason"],
      registers,
    });
    // Only a node that uses Redis has the series: a constant 0 elsewhere would page someone.
    this.redisUp = options.redis
      ? new Gauge({
          name: "sluice_redis_up",
          help: "1 while every Redis connection of this node is ready, 0 otherwise",
          registers,
        })
      : undefined;
    if (options.redis) {
      const metrics = this;
      this.backpressureSeconds = new Counter({
        name: "sluice_cluster_backpressure_seconds_total",
        help: "Time this node's publishers were paused because Redis was behind it (outbound pipeline or subscription lag past redis.backpressure)",
        registers,
      });
      this.backpressureEpisodes = new Counter({
        name: "sluice_cluster_backpressure_total",
        help: "Times this node began pausing its publishers because Redis was behind it",
        registers,
      });
      this.backpressureActive = new Gauge({
        name: "sluice_cluster_backpressure_active",
        help: "1 while this node's publishers are paused because Redis is behind it",
        registers,
      });
      new Gauge({
        name: "sluice_redis_publish_pending_bytes",
        help: "Bytes of PUBLISHes sent to Redis and not yet answered (the outbound pipeline)",
        registers,
        collect() {
          this.set(metrics.clusterLoad?.pendingBytes() ?? 0);
        },
      });
      new Gauge({
        name: "sluice_redis_subscription_lag_bytes",
        help: "Bytes Redis holds for this node's subscription, not yet read (CLIENT LIST omem; 0 where not measured)",
        registers,
        collect() {
          this.set(metrics.clusterLoad?.lagBytes() ?? 0);
        },
      });
      new Gauge({
        name: "sluice_redis_cluster_subscription_lag_bytes",
        help: "The largest lag among the cluster's node subscriptions that this node's publishers wait for, its own included (CLIENT LIST omem; stalled nodes not counted)",
        registers,
        collect() {
          this.set(metrics.clusterLoad?.clusterLagBytes() ?? 0);
        },
      });
      this.subscriptionPausedSeconds = new Counter({
        name: "sluice_cluster_subscription_paused_seconds_total",
        help: "Time this node did not read its Redis subscription because it was saturated and its subscribers' windows were full (redis.backpressure.waitingDeliveries)",
        registers,
      });
      this.subscriptionPausedEpisodes = new Counter({
        name: "sluice_cluster_subscription_paused_total",
        help: "Times this node stopped reading its Redis subscription because it was saturated and its subscribers' windows were full",
        registers,
      });
      this.pausedSleepSeconds = new Counter({
        name: "sluice_cluster_paused_sleep_seconds_total",
        help: "Time this node slept between passes over its connections while it did not read its Redis subscription, so as to read acknowledgements in batches (redis.backpressure.pausedReadGapMs)",
        registers,
      });
    }
    this.subscriptionResets = options.redis
      ? new Counter({
          name: "sluice_redis_subscription_resets_total",
          help: "Times Redis closed this node's pub/sub subscriber connection while its other Redis connections stayed up (past client-output-buffer-limit pubsub, or CLIENT KILL); counted when it is back. Messages published meanwhile did not reach the node. A whole Redis outage is not counted here (sluice_redis_up)",
          registers,
        })
      : undefined;
    this.shared = new SharedGroupMetrics(registers);
    this.sessionsExpired = new Counter({
      name: "sluice_sessions_expired_total",
      help: "MQTT 5 sessions this node ended because their Session Expiry Interval passed while their client was away (in a cluster, whichever node's timer fired, also for a dead node's sessions)",
      registers,
    });
    new Gauge({
      name: "sluice_cluster_nodes",
      help: "Live nodes of the cluster as this node sees them, itself included",
      registers,
      collect() {
        this.set(sources.clusterNodes());
      },
    });
    new Gauge({
      name: "sluice_subscriptions",
      help: "Subscriptions of the clients connected to this node, and those of departed clients not yet removed (removals are paced)",
      registers,
      collect() {
        this.set(sources.subscriptionCount());
      },
    });
    new Gauge({
      name: "sluice_retained_messages",
      help: "Retained messages in the store",
      registers,
      async collect() {
        this.set(await sources.retainedCount());
      },
    });
  }

  markConnectionOpened(listener: ListenerType): void {
    this.connections.inc({ listener, protocol: "pending" });
    this.connectionsTotal.inc({ listener });
  }

  /** A connection's CONNECT was accepted: it moves from `pending` to its protocol. */
  markConnectAccepted(listener: ListenerType, protocol: MqttProtocolLabel): void {
    this.connections.dec({ listener, protocol: "pending" });
    this.connections.inc({ listener, protocol });
    this.connects.inc({ protocol });
  }

  markConnectionClosed(listener: ListenerType, protocol: MqttProtocolLabel): void {
    this.connections.dec({ listener, protocol });
  }

  markConnectionRejected(reason: string): void {
    this.connectionsRejected.inc({ reason });
  }

  markProtocolError(reason: string): void {
    this.protocolErrors.inc({ reason });
  }

  /** A refused CONNECT: counted by its reason, and as a rejected connection. */
  markAuthFailure(reason: string): void {
    this.authFailures.inc({ reason });
    this.connectionsRejected.inc({
      reason: reason === "locked_out" ? "locked_out" : "auth_failed",
    });
  }

  markUsernameTargeted(): void {
    this.usernamesTargeted.inc();
  }

  markAclDenied(action: "publish" | "subscribe" | "read"): void {
    this.aclDenied.inc({ action });
  }

  markPublishThrottled(): void {
    this.publishThrottled.inc();
  }

  markSubscriptionRefused(reason: string): void {
    this.subscriptionsRefused.inc({ reason });
  }

  markMessageDropped(reason: string, count = 1): void {
    this.droppedMessages.inc({ reason }, count);
  }

  setRedisUp(up: boolean): void {
    this.redisUp?.set(up ? 1 : 0);
  }

  /** Where the pending-bytes and subscription-lag gauges read from. */
  watchClusterLoad(load: {
    pendingBytes(): number;
    lagBytes(): number;
    clusterLagBytes(): number;
  }): void {
    this.clusterLoad = load;
  }

  subscriptionPaused(): void {
    this.subscriptionPausedEpisodes?.inc();
  }

  subscriptionResumed(seconds: number): void {
    this.subscriptionPausedSeconds?.inc(seconds);
  }

  pausedSleep(seconds: number): void {
    this.pausedSleepSeconds?.inc(seconds);
  }

  backpressureEngaged(): void {
    this.backpressureEpisodes?.inc();
    this.backpressureActive?.set(1);
  }

  backpressureReleased(seconds: number): void {
    this.backpressureSeconds?.inc(seconds);
    this.backpressureActive?.set(0);
  }

  markRedisSubscriptionReset(): void {
    this.subscriptionResets?.inc();
  }

  markSessionExpired(): void {
    this.sessionsExpired.inc();
  }

  markMessageReceived(): void {
    this.unreportedReceived++;
  }

  markMessageSent(): void {
    this.unreportedSent++;
  }

  /** Network faults (issue 17): built on first use, so only nodes that use Redis have them. */
  private partition: PartitionSeries | undefined;

  private partitionSeries(): PartitionSeries {
    this.partition ??= new PartitionSeries(this.registry);
    return this.partition;
  }

  observeRedisRoundTrip(seconds: number): void {
    this.partitionSeries().roundTrip.observe(seconds);
  }

  setFenced(fenced: boolean): void {
    this.partitionSeries().fenced.set(fenced ? 1 : 0);
    if (fenced) this.partitionSeries().fences.inc();
  }

  markOwnershipConflict(cause: OwnershipConflictCause): void {
    this.partitionSeries().ownershipConflicts.inc({ cause });
  }

  /** Prometheus text exposition of every metric of this node. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** `group`: a bounded label (SparkplugGroups), never a raw group id from a client. */
  markSparkplugBirth(group: string, kind: "node" | "device"): void {
    this.sparkplug.births.inc({ group, kind });
  }

  markSparkplugDeath(group: string, kind: "node" | "device"): void {
    this.sparkplug.deaths.inc({ group, kind });
  }

  markSparkplugRefused(group: string, reason: string): void {
    this.sparkplug.refused.inc({ group, reason });
  }

  /** An edge node on this node came online (+1) or went offline (-1). */
  markSparkplugEdgeNode(group: string, change: 1 | -1): void {
    this.sparkplug.edgeNodesOnline.inc({ group }, change);
  }

  /**
   * Sockets refused by a socket quota, or while the node starts, drains or is fenced, by outcome
   * and listener type; a quota's refusal is also in sluice_connections_rejected_total.
   */
  private readonly refusalAnswers = new Counter({
    name: "sluice_connection_refusal_answers_total",
    help: "Sockets refused by a socket quota, by listener type: answered with a CONNACK, dropped at once (answers at their bound, or overload), or unread (no CONNECT in time and size, or no completed TLS handshake or WebSocket upgrade)",
    labelNames: ["outcome", "transport"],
    registers: [this.registry],
  });

  markRefusalAnswer(
    outcome: "answered" | "dropped" | "unread",
    transport: "tcp" | "tls" | "ws" | "wss",
  ): void {
    this.refusalAnswers.inc({ outcome, transport });
  }

  private readonly replicaAckMisses = new Counter({
    name: "sluice_redis_replica_ack_misses_total",
    help: "Waits on a Redis replica confirmation that failed (fewer replicas than redis.replicaAcks.replicas confirmed in time, or the confirmation's connection failed): acknowledgements (PUBACK, PUBREC, SUBACK of a persistent session, CONNACK with a will) withheld or, for a SUBACK or CONNACK, sent after the wait",
    registers: [this.registry],
  });

  markReplicaAcksMissed(count: number): void {
    this.replicaAckMisses.inc(count);
  }
}
