import type { Client, PublishPacket } from "aedes";
import type { ConnectAdmission, ConnectRejection } from "../admission/connect-admission.js";
import type { OwnedConnection, SessionRegistry } from "../cluster/session-registry.js";
import {
  closeWithWill,
  dropWillDelay,
  heldFilters,
  imposeServerKeepAlive,
  isWillOf,
  sessionTermsOf,
} from "../engine/aedes-internals.js";
import type { BrokerHooks } from "../engine/hook-adapter.js";
import { PacketViolationError } from "../engine/packet-guard.js";
import { isBackedUp } from "../engine/socket-backlog.js";
import {
  IdentifierRejectedError,
  NotAuthorizedError,
  ProtocolError,
  PublishDeniedError,
  ReasonCode,
  ServerUnavailableError,
} from "../errors.js";
import type { SluiceMetrics } from "../observability/metrics.js";
import { exceedsBytes, invalidTopicFilter, invalidTopicName } from "../protocol/topic-rules.js";
import type { AuditLog, AuditSubject } from "../security/audit-log.js";
import type { Authenticator, Identity } from "../security/authenticator.js";
import type { AclSubject, Authorizer } from "../security/authorizer.js";
import { isSharedFilter, parseSharedFilter } from "../shared-subscriptions/shared-filter.js";
import type { ClientContext, ClientContexts } from "./client-context.js";

/** MQTT 5 reason codes of admission refusals (3.1.1 clients get CONNACK 3 for each). */
const REJECTION_REASON: Record<ConnectRejection, ReasonCode> = {
  overload: ReasonCode.ServerBusy,
  flapping: ReasonCode.Banned,
  banned: ReasonCode.Banned,
  per_username: ReasonCode.QuotaExceeded,
};

const SYS_PREFIX = "$SYS";

type WillPacket = PublishPacket & { properties?: { willDelayInterval?: number } };

/** An MQTT 5 will's Will Delay Interval (s); 0 without one. */
function willDelayOf(packet: PublishPacket): number {
  return (packet as WillPacket).properties?.willDelayInterval ?? 0;
}

/** A will read back from the persistence (it names the node it was left with), not a PUBLISH. */
function isStoredWill(client: Client, packet: PublishPacket): boolean {
  return (packet as { brokerId?: string }).brokerId !== undefined && !isWillOf(client, packet);
}

/** The nodes' own signals (takeovers, registry changes, shared deliveries): no client reads them. */
const INTERNAL_PREFIX = "$SYS/sluice/";

function isSysTopic(topic: string): boolean {
  return (
    topic.startsWith(SYS_PREFIX) &&
    (topic.length === SYS_PREFIX.length || topic[SYS_PREFIX.length] === "/")
  );
}

export interface BrokerRulesEvents {
  /** A client's will is about to be published (its connection ended without DISCONNECT). */
  onWillPublished(clientId: string): void;
}

export interface BrokerRulesDeps {
  contexts: ClientContexts;
  authenticator: Authenticator;
  /** Read per decision, so that a reloaded ACL applies to every client at once. */
  authorizer(): Authorizer;
  /** The identity of the client currently connected on this node with this id, if any. */
  liveIdentity(clientId: string): Identity | undefined;
  metrics: SluiceMetrics;
  sessions: SessionRegistry;
  /**
   * In a cluster: decides whether this node may publish a dead node's will (exactly one
   * survivor may, once the node's lease is gone). Absent on a single node, where only the node
   * itself publishes its wills.
   */
  willClaims?: { claimOfSilentNode(brokerId: string, clientId: string): Promise<boolean> };
  /**
   * In a cluster: takes a dead node's will that has a Will Delay Interval off the will sweep and
   * schedules it; resolves false when the client is connected again (the will is void).
   */
  delayedWills?: {
    defer(brokerId: string, clientId: string, delaySeconds: number): Promise<boolean>;
  };
  /**
   * In a cluster: learns of every accepted claim on a client id, to close the connection it
   * displaced on another node. Absent on a single node, where aedes closes the old one itself.
   */
  ownership?: {
    claimed(client: Client, owned: OwnedConnection, displacedNode: string | undefined): void;
  };
  audit: AuditLog;
  events: BrokerRulesEvents;
  /** Overload, flapping and per-username quotas on CONNECT. */
  admission?: ConnectAdmission;
  /** Longest topic, filter or will topic in bytes (`limits.maxTopicBytes`). */
  maxTopicBytes: number;
  /** Longest keep-alive a CONNECT may ask for (`limits.maxKeepaliveSeconds`); absent: any. */
  maxKeepaliveSeconds?: number | undefined;
  /** Bytes waiting behind a full socket before QoS 0 to it is dropped (`limits.queue`). */
  maxBufferedBytes: number;
  /** Subscriptions one client may hold (`limits.subscriptions.perClient`); absent: no limit. */
  maxSubscriptionsPerClient?: number | undefined;
}

/**
 * Whether `client` may hold one more filter (`topic`; one it holds already is a replacement).
 * Counts aedes' live subscriptions plus filters granted that aedes has not added yet.
 */
function withinSubscriptionLimit(
  client: Client,
  context: ClientContext,
  topic: string,
  limit: number,
): boolean {
  const held = heldFilters(client);
  if (topic in held) return true;
  let count = 0;
  for (const _ in held) count++;
  context.pendingFilters ??= new Set();
  const pending = context.pendingFilters;
  for (const filter of pending) {
    if (filter in held) pending.delete(filter);
    else count++;
  }
  if (pending.has(topic)) return true;
  if (count >= limit) return false;
  pending.add(topic);
  return true;
}

/** The audit fields of a client. */
export function auditSubject(context: ClientContext | undefined, clientId?: string): AuditSubject {
  const identity = context?.identity;
  return {
    listener: context?.listener,
    remoteAddress: context?.remoteAddress,
    clientId: identity?.clientId ?? clientId,
    username: identity?.username,
    certificateCn: identity?.certificateCn,
    certificateFingerprint: identity?.certificateFingerprint,
  };
}

/**
 * The broker's CONNECT, PUBLISH, SUBSCRIBE and delivery decisions: MQTT 3.1.1 rules that aedes
 * leaves out, then authentication and identity binding, then topic authorization.
 */
export function createBrokerRules(deps: BrokerRulesDeps): BrokerHooks {
  const { contexts, authenticator, metrics, sessions, audit, events } = deps;
  const subjectOf = (client: Client): AclSubject | undefined => contexts.get(client)?.identity;

  /** A will aedes publishes for a client of a dead node (its topic was authorized at CONNECT). */
  const claimDeadNodeWill = (packet: PublishPacket): Promise<void> | undefined => {
    const { brokerId, clientId } = packet as PublishPacket & {
      brokerId?: string;
      clientId?: string;
    };
    if (!deps.willClaims || brokerId === undefined || clientId === undefined) return undefined;
    const delay = willDelayOf(packet);
    if (delay > 0 && deps.delayedWills) {
      // Published by the timer, from a survivor, after the delay (or not at all): not now.
      return deps.delayedWills.defer(brokerId, clientId, delay).then(() => {
        throw new PublishDeniedError(packet.topic);
      });
    }
    const claims = deps.willClaims;
    return claims.claimOfSilentNode(brokerId, clientId).then((won) => {
      if (!won) throw new PublishDeniedError(packet.topic);
      dropWillDelay(packet);
      events.onWillPublished(clientId);
    });
  };

  return {
    preConnect(client, packet) {
      const context = contexts.get(client);
      if (!context) throw new ServerUnavailableError("connection has no context");
      // [MQTT-3.1.2-1] the protocol name goes with its level: MQTT is 4, MQIsdp (3.1) is 3.
      // Level 5 is MQTT 5; other levels never get here (the packet guard answers CONNACK 1).
      const { protocolId, protocolVersion } = packet as typeof packet & {
        protocolVersion?: number;
      };
      if (
        (protocolId === "MQTT" && protocolVersion === 3) ||
        (protocolId === "MQIsdp" && protocolVersion !== 3)
      ) {
        throw new ProtocolError(`protocol name ${protocolId} with level ${protocolVersion}`);
      }
      context.keepaliveSeconds = packet.keepalive ?? 0;
      if (packet.will) {
        // Counted and logged as a protocol violation, like an over-long PUBLISH topic; the
        // connection closes without a CONNACK, as for an invalid will topic.
        if (exceedsBytes(packet.will.topic ?? "", deps.maxTopicBytes)) {
          throw new PacketViolationError(
            "topic_too_long",
            `will topic exceeds the limit of ${deps.maxTopicBytes} bytes`,
          );
        }
        const reason = invalidTopicName(packet.will.topic ?? "");
        if (reason) throw new ProtocolError(`will: ${reason}`);
        context.willTopic = packet.will.topic;
      }
      // aedes replaces an empty client id with a generated one before `authenticate`.
      context.emptyClientId = packet.clientId === "";
    },

    async authenticate(client, username, password) {
      const context = contexts.get(client);
      if (!context) throw new ServerUnavailableError("connection has no context");
      const refuse = (reason: ConnectRejection): never => {
        metrics.markConnectionRejected(reason);
        throw new ServerUnavailableError(reason, undefined, undefined, REJECTION_REASON[reason]);
      };
      // Before any password is hashed: an overloaded node spends nothing on new clients.
      const overload = deps.admission?.beforeAuthentication();
      if (overload) refuse(overload);
      // Checked here, not in preConnect: only authenticate can answer with a CONNACK code.
      const maxKeepalive = deps.maxKeepaliveSeconds;
      const keepalive = context.keepaliveSeconds ?? 0;
      if (maxKeepalive !== undefined && (keepalive === 0 || keepalive > maxKeepalive)) {
        // MQTT 5 lets the server impose its limit (Server Keep Alive in the CONNACK) [MQTT-3.2.2-21]
        if (client.version === 5) imposeServerKeepAlive(client, maxKeepalive);
        else {
          metrics.markConnectionRejected("keepalive");
          throw new IdentifierRejectedError(
            `keep-alive ${keepalive} s: must be 1 to ${maxKeepalive} s`,
          );
        }
      }
      if (context.emptyClientId) {
        // [MQTT-3.1.3-8] a zero-length client id needs clean session 1;
        // MQTT 3.1 (protocol level 3) does not allow it at all.
        if (!client.clean) {
          throw new IdentifierRejectedError("zero-length client id with clean session 0");
        }
        if (client.version === 3) {
          throw new IdentifierRejectedError("zero-length client id on MQTT 3.1");
        }
      }
      const identity = await authenticator.authenticate({
        clientId: client.id,
        clientIdAssigned: context.emptyClientId,
        username,
        password,
        peerCertificate: context.peerCertificate,
        remoteAddress: context.remoteAddress,
        listener: context.listener,
        exchange: context.authExchange,
      });
      const refuseTakeover = (): never => {
        metrics.markAuthFailure("session_owned_by_other");
        audit.authFailed(auditSubject({ ...context, identity }), "session_owned_by_other");
        throw new NotAuthorizedError("client id held by another identity");
      };
      // A client id in use (live here, or a stored session anywhere) may only be taken over by
      // the identity that holds it: device A can never take device B's session.
      const live = deps.liveIdentity(client.id);
      if (live !== undefined && live.username !== identity.username) refuseTakeover();
      // A will is a publish made later on the client's behalf, possibly by another node:
      // it is authorized now, like Mosquitto does, and the CONNECT refused if it may not.
      if (
        context.willTopic !== undefined &&
        !deps.authorizer().canPublish(identity, context.willTopic)
      ) {
        metrics.markAclDenied("publish");
        audit.aclDenied(auditSubject({ ...context, identity }), "publish", context.willTopic);
        throw new NotAuthorizedError("will topic not allowed");
      }
      if (deps.admission) {
        const admitted = await deps.admission.afterAuthentication(client.id, identity.username);
        if (admitted.counted && identity.username !== undefined) {
          context.countedUsername = identity.username;
        }
        if (admitted.rejection === "flapping") {
          audit.abuse(auditSubject({ ...context, identity }), "flapping");
        }
        if (admitted.rejection) refuse(admitted.rejection);
      }
      const claim = await sessions.claim(client, sessionTermsOf(client), identity.username);
      if (claim.refused) return refuseTakeover();
      const displacedNode = claim.owner?.displacedNode;
      if (live || displacedNode !== undefined)
        audit.takeover(auditSubject({ ...context, identity }));
      if (claim.owner) {
        context.ownerEpoch = claim.owner.epoch;
        deps.ownership?.claimed(
          client,
          { clientId: client.id, epoch: claim.owner.epoch, username: identity.username },
          displacedNode,
        );
      }
      context.identity = identity;
      context.sessionPresent = !claim.refused && claim.existed;
    },

    authorizePublish(client: Client | null, packet: PublishPacket) {
      // DUP describes one hop; it is never forwarded as the publisher set it [MQTT-3.3.1-3].
      packet.dup = false;
      // No client ever writes $SYS, whatever the ACL says: the broker's own cluster signals
      // (takeover, heartbeats) travel there, so a forged one could disconnect any client
      // (aedes issue 597).
      const subject = client === null ? undefined : subjectOf(client);
      if (
        isSysTopic(packet.topic) ||
        (subject && !deps.authorizer().canPublish(subject, packet.topic))
      ) {
        metrics.markAclDenied("publish");
        audit.aclDenied(
          auditSubject(client === null ? undefined : contexts.get(client)),
          "publish",
          packet.topic,
        );
        // MQTT 3.1.1 cannot refuse a PUBLISH: it is dropped, and QoS 1/2 still acknowledged.
        throw new PublishDeniedError(packet.topic);
      }
      // aedes' will sweep passes the client connected here under the will's client id, if any:
      // a delayed will of a dead node is deferred (or voided) all the same.
      if (client === null || (willDelayOf(packet) > 0 && isStoredWill(client, packet))) {
        return claimDeadNodeWill(packet);
      }
      metrics.markMessageReceived();
      if (isWillOf(client, packet)) events.onWillPublished(client.id);
    },

    // A refused filter gets its own SUBACK code (MQTT 3.1.1: 0x80); the others are granted.
    authorizeSubscribe(client, subscription) {
      if (exceedsBytes(subscription.topic, deps.maxTopicBytes)) {
        metrics.markSubscriptionRefused("topic_too_long");
        return ReasonCode.TopicFilterInvalid;
      }
      const shared = isSharedFilter(subscription.topic)
        ? parseSharedFilter(subscription.topic)
        : undefined;
      if (shared !== undefined && "invalid" in shared) {
        metrics.markSubscriptionRefused("invalid_shared");
        return ReasonCode.TopicFilterInvalid;
      }
      // [MQTT-3.8.3-4] No Local on a shared subscription is a protocol error
      const noLocalShared = shared !== undefined && subscription.nl === true;
      const reason = noLocalShared
        ? "No Local on a shared subscription"
        : invalidTopicFilter(subscription.topic);
      if (reason) {
        // A malformed filter closes the connection [MQTT-4.13.1-1]; MQTT 5 is told why first.
        if (client.version !== 5) throw new ProtocolError(reason);
        return closeWithWill(client, { reasonCode: ReasonCode.ProtocolError }).then(() => {
          throw new ProtocolError(reason);
        });
      }
      const context = contexts.get(client);
      const subject = context?.identity;
      // A shared subscription needs its filter granted, and the group too: joining one takes
      // messages from its other members.
      const authorizer = deps.authorizer();
      if (
        !subject ||
        !authorizer.canSubscribe(subject, shared?.filter ?? subscription.topic) ||
        (shared !== undefined && !authorizer.canSubscribe(subject, subscription.topic))
      ) {
        metrics.markAclDenied("subscribe");
        audit.aclDenied(auditSubject(context), "subscribe", subscription.topic);
        return ReasonCode.NotAuthorized;
      }
      // Last: a filter counted here is one granted (a refused one must not use up the quota).
      const limit = deps.maxSubscriptionsPerClient;
      if (
        limit !== undefined &&
        context &&
        !withinSubscriptionLimit(client, context, subscription.topic, limit)
      ) {
        metrics.markSubscriptionRefused("per_client");
        return ReasonCode.QuotaExceeded;
      }
      return subscription;
    },

    authorizeForward(client, packet) {
      const context = contexts.get(client);
      // QoS 0 may be dropped: to a client whose socket is backed up, it is (a subscriber that
      // does not read must not hold the node's memory). QoS 1/2: the in-flight window.
      if (packet.qos === 0 && context && isBackedUp(context.stream, deps.maxBufferedBytes)) {
        metrics.markMessageDropped("slow_consumer");
        return null;
      }
      const subject = context?.identity;
      // ACLs may grant `$SYS/#` to monitoring; the signals between nodes (shared deliveries
      // carry other clients' messages) are not the broker's to hand out.
      const { topic } = packet;
      const internal = topic.charCodeAt(0) === 0x24 && topic.startsWith(INTERNAL_PREFIX);
      if (!subject || internal || !deps.authorizer().canRead(subject, topic)) {
        // Counted, not audited: a wide subscription would write one line per message.
        metrics.markAclDenied("read");
        return null;
      }
      metrics.markMessageSent();
      return packet;
    },
  };
}
