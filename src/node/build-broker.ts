import { Aedes, type Client } from "aedes";
import type { ConnectAdmission } from "../admission/connect-admission.js";
import type { Backend } from "../backend/backend.js";
import type { SluiceConfig } from "../config/schema.js";
import type { PatchedAedesOptions } from "../engine/aedes-internals.js";
import { disconnectOnKeepaliveTimeout } from "../engine/aedes-internals.js";
import type { BrokerSlot } from "../engine/broker-slot.js";
import { confirmEmits } from "../engine/confirmed-emits.js";
import { DeadNodeWills } from "../engine/dead-node-wills.js";
import type { DeparturePacer } from "../engine/departure-pacer.js";
import { type DurableWillStore, DurableWills } from "../engine/durable-wills.js";
import type { Emitter } from "../engine/emitters.js";
import { hardenBroker } from "../engine/engine-hardening.js";
import { adaptHooks } from "../engine/hook-adapter.js";
import { InflightWindows } from "../engine/inflight-window.js";
import { Mqtt5Delivery } from "../engine/mqtt5-delivery.js";
import { PublishFence } from "../engine/publish-fence.js";
import { ReceiveMaximum } from "../engine/receive-maximum.js";
import { ResumeGate } from "../engine/resume-gate.js";
import {
  type DelayedWills,
  useClusterTimers,
  useMemoryTimers,
} from "../engine/session-timers-engine.js";
import { SharedSubscriptionsEngine } from "../engine/shared-subscriptions-engine.js";
import type { SubscribePacer } from "../engine/subscribe-pacer.js";
import { ReasonCode } from "../errors.js";
import { ReadBatching } from "../limits/read-batching.js";
import { SubscriptionThrottle } from "../limits/subscription-throttle.js";
import { createBrokerRules } from "../mqtt/broker-rules.js";
import type { ClientContexts } from "../mqtt/client-context.js";
import type { Logger } from "../observability/logger.js";
import type { SluiceMetrics } from "../observability/metrics.js";
import type { AuditLog } from "../security/audit-log.js";
import type { Authenticator } from "../security/authenticator.js";
import type { SecurityFiles } from "../security/security-files.js";
import { strategyResolver } from "../shared-subscriptions/member-picker.js";
import { SharedDispatcher } from "../shared-subscriptions/shared-dispatcher.js";
import { Sparkplug } from "../sparkplug/sparkplug.js";
import { reclaimMemoryAfterDepartures } from "./memory-reclaim.js";

export interface BrokerParts {
  config: SluiceConfig;
  heartbeatMs: number;
  backend: Backend;
  authenticator: Authenticator;
  security: SecurityFiles;
  admission: ConnectAdmission;
  contexts: ClientContexts;
  /** A session's queue lost its oldest `count` messages to its cap. */
  onQueueFull(clientId: string, count: number): void;
  /** Paces SUBSCRIBEs node-wide; the intake watches each connection with it. */
  subscribePacer: SubscribePacer;
  /** Paces the removal of departed clients' subscriptions node-wide. */
  departurePacer: DeparturePacer;
  slot: BrokerSlot;
  metrics: SluiceMetrics;
  audit: AuditLog;
  log: Logger;
}

/** The aedes broker with Sluice's rules as its hooks, on the backend's store and emitter. */
export async function buildBroker(parts: BrokerParts): Promise<Aedes> {
  const { config, backend, contexts, log } = parts;
  const { ownership } = backend;
  const { limits } = config;
  const windows = new InflightWindows(
    { maxInflight: limits.queue.maxInflight, maxQueued: limits.queue.maxQueuedPerClient },
    { onDropped: (client, count) => parts.onQueueFull(client.id, count) },
  );
  const { subscribePacer, departurePacer } = parts;
  const mqttLog = log.child({ module: "mqtt" });
  const sharedLog = log.child({ module: "shared" });
  const dispatcher = new SharedDispatcher({
    nodeId: config.nodeId,
    store: backend.sharedGroups,
    strategyOf: strategyResolver(config.sharedSubscriptions),
    maxGroups: config.sharedSubscriptions.maxGroups,
    metrics: parts.metrics.shared,
    log: sharedLog,
  });
  parts.metrics.shared.observe(() => dispatcher.view());
  const shared = new SharedSubscriptionsEngine(
    dispatcher,
    config.nodeId,
    sharedLog,
    backend.fabric?.persistence.inboundQos2,
  );
  const delivery = new Mqtt5Delivery({
    isSharedDelivery: (packet) => shared.isSharedDelivery(packet),
    onTooLarge: (client, size, maximum) => {
      parts.metrics.markMessageDropped("packet_too_large");
      mqttLog.debug(
        { event: "delivery.packet_too_large", clientId: client.id, size, maximum },
        "message larger than the client's maximum packet size not sent",
      );
    },
  });
  const nodeLog = log.child({ module: "node" });
  const onWillPublished = (clientId: string) =>
    mqttLog.debug({ event: "client.will_published", clientId }, "will published");
  let delayedWills: DelayedWills | undefined;
  const sparkplug = new Sparkplug(config.sparkplug, {
    ...parts,
    log,
    certificateIndex: backend.sparkplugCertificates,
  });
  const rules = createBrokerRules({
    contexts,
    authenticator: parts.authenticator,
    authorizer: () => sparkplug.authorizer(parts.security.authorizer()),
    liveIdentity: (clientId) => {
      const live = parts.slot.client(clientId);
      return live ? contexts.get(live)?.identity : undefined;
    },
    metrics: parts.metrics,
    sessions: backend.sessions,
    ...(backend.ownership ? { ownership: backend.ownership } : {}),
    ...(backend.willClaims ? { willClaims: backend.willClaims } : {}),
    delayedWills: {
      defer: (brokerId, clientId, delay) =>
        delayedWills?.defer(brokerId, clientId, delay) ?? Promise.resolve(false),
    },
    audit: parts.audit,
    admission: parts.admission,
    maxBufferedBytes: limits.queue.maxBufferedBytes,
    maxTopicBytes: limits.maxTopicBytes,
    maxKeepaliveSeconds: limits.maxKeepaliveSeconds,
    maxSubscriptionsPerClient: limits.subscriptions.perClient,
    events: { onWillPublished },
  });
  const resumeGate = new ResumeGate(limits.queue.maxQueuedPerClient, {
    onReleased: (client, held, alreadyQueued) =>
      mqttLog.debug(
        { event: "session.resume_released", clientId: client.id, held, alreadyQueued },
        "live deliveries held while a resumed session's queue was sent went out",
      ),
    onDropped: (client, count) => {
      if (client.clean) parts.onQueueFull(client.id, count);
    },
  });
  const receiveMaximum = new ReceiveMaximum(config.mqtt5.receiveMaximum, {
    onExceeded: (client) => {
      parts.metrics.markProtocolError("receive_maximum_exceeded");
      mqttLog.info(
        { event: "client.receive_maximum_exceeded", clientId: client.id },
        "client exceeded the Receive Maximum: disconnected with 0x93",
      );
    },
  });
  const hooks = adaptHooks(
    {
      ...rules,
      authorizePublish: receiveMaximum.observePublish(
        shared.observePublish(sparkplug.observePublish(rules.authorizePublish)),
      ),
      authorizeSubscribe: subscribePacer.observeSubscribe(
        departurePacer.observeSubscribe(
          windows.observeSubscribe(
            delivery.observeSubscribe(
              shared.observeSubscribe(resumeGate.observeSubscribe(rules.authorizeSubscribe)),
            ),
          ),
        ),
      ),
      preConnect: delivery.observeConnect(rules.preConnect),
    },
    {
      onUnexpectedError: (hook, error) =>
        nodeLog.error(
          { event: "hook.failed", hook, err: error },
          "broker hook failed unexpectedly",
        ),
    },
  );
  // Over Redis a publish can fail while later ones of the same read succeed (publish-fence.ts).
  const fence = new PublishFence();
  const options: PatchedAedesOptions = {
    id: config.nodeId,
    persistence: backend.store.persistence,
    ...(backend.store.mq === undefined
      ? {}
      : { mq: fence.guard(confirmed(shared.wrap(backend.store.mq as Emitter), backend)) }),
    heartbeatInterval: parts.heartbeatMs,
    connectTimeout: limits.connectTimeoutMs,
    // A client whose socket takes no data for this long is closed (a persistent session
    // keeps its stored queue): a socket that takes nothing holds node memory for nothing.
    drainTimeout: limits.queue.drainTimeoutMs,
    maxTopicLevels: limits.subscriptions.maxTopicLevels,
    // The CONNACK reports the interval applied when it is less than asked for.
    sessionExpiryIntervalLimit: config.mqtt5.maxSessionExpirySeconds ?? 0,
    // Advertised in MQTT 5 CONNACKs; enforced by ReceiveMaximum.
    receiveMaximum: config.mqtt5.receiveMaximum,
    ...hooks,
    authorizeForward: windows.observeForward(
      delivery.observeForward(
        // A later attempt of an inbound QoS 2 message skips whom the first reached (issue 17).
        backend.fabric?.persistence.inboundQos2?.attempts.filterForward(rules.authorizeForward) ??
          rules.authorizeForward,
      ),
    ),
    topicAliasMaximum: config.mqtt5.topicAliasMaximum,
    sessionPresent: (client) => contexts.get(client)?.sessionPresent === true,
    // Cluster takeover is ClientOwnership's, fenced by epochs; aedes' gossip is not.
    closeOnPeerConnect: ownership === undefined,
    ...(ownership ? { mayRegister: (client: Client) => ownership.mayRegister(client) } : {}),
  };
  const broker = await Aedes.createBroker(options);
  hardenBroker(broker);
  if (backend.store.mq !== undefined) {
    fence.install(broker);
    broker.once("closed", () => fence.close());
  }
  resumeGate.install(broker);
  const { timers, fabric, willClaims, nodeDeaths } = backend;
  new DurableWills(broker, {
    store: backend.store.persistence as DurableWillStore,
    ...(willClaims ? { claim: (brokerId, clientId) => willClaims.claim(brokerId, clientId) } : {}),
    log: mqttLog,
  }).install();
  sparkplug.install(broker);
  if (timers && fabric && willClaims && nodeDeaths) {
    delayedWills = useClusterTimers(broker, {
      ...{ timers, persistence: fabric.persistence, willClaims, onWillPublished },
      epochOf: (client) => contexts.get(client)?.ownerEpoch,
      prepareWill: (will) => sparkplug.stampDeath(will),
      log: log.child({ module: "cluster" }),
    });
    new DeadNodeWills(broker, {
      heartbeatMs: parts.heartbeatMs,
      store: fabric.persistence,
      isFabricUp: () => fabric.isUp(),
      nodeGone: (nodeId) => nodeDeaths.gone(nodeId),
      log: log.child({ module: "cluster" }),
    }).start();
  } else {
    useMemoryTimers(broker, (clientId) => backend.sessions.forget?.(clientId));
    broker.on("sessionExpired", () => parts.metrics.markSessionExpired());
  }
  await shared.install(broker);
  broker.once("closed", () => void dispatcher.stop());
  if (fabric && config.redis) {
    const throttle = new SubscriptionThrottle(
      config.redis.backpressure,
      windows,
      fabric,
      parts.metrics,
      log.child({ module: "cluster" }),
      new ReadBatching(config.redis.backpressure.pausedReadGapMs),
    );
    broker.once("closed", () => throttle.stop());
  }
  receiveMaximum.install(broker);
  disconnectOnKeepaliveTimeout(broker, ReasonCode.KeepAliveTimeout);
  parts.slot.fill(broker);
  parts.slot.trackDepartures(departurePacer);
  reclaimMemoryAfterDepartures(broker, nodeLog);
  return broker;
}

/** The emitter, its QoS 1/2 publishes confirmed by Redis' replicas when `redis.replicaAcks` asks. */
function confirmed(emitter: Emitter, backend: Backend): Emitter {
  const acks = backend.fabric?.replicaAcks;
  return acks === undefined ? emitter : confirmEmits(emitter, acks);
}
