import type { Aedes, Client, PublishPacket } from "aedes";
import type { SparkplugConfig } from "../config/sparkplug-schema.js";
import { isWillOf, willOf } from "../engine/aedes-internals.js";
import type { BrokerHooks } from "../engine/hook-adapter.js";
import { PayloadInvalidError } from "../errors.js";
import { auditSubject } from "../mqtt/broker-rules.js";
import type { ClientContexts } from "../mqtt/client-context.js";
import type { Logger } from "../observability/logger.js";
import type { SluiceMetrics } from "../observability/metrics.js";
import type { AuditLog, AuditSubject } from "../security/audit-log.js";
import type { AclSubject, Authorizer } from "../security/authorizer.js";
import { BirthCertificates } from "./birth-certificates.js";
import type { DeviceCertificateIndex } from "./device-certificate-index.js";
import { EdgeNodeCensus } from "./edge-node-census.js";
import { GroupLabels } from "./group-labels.js";
import { IdentityBinding } from "./identity-binding.js";
import { NamePatterns } from "./name-pattern.js";
import { SparkplugAuthorizer } from "./sparkplug-authorizer.js";
import { checkPayload, deathBdSeq, isStatePayload, withTimestamp } from "./sparkplug-payload.js";
import { NAMESPACE_PREFIX, parseSparkplugTopic, type SparkplugTopic } from "./sparkplug-topic.js";

type AuthorizePublish = BrokerHooks["authorizePublish"];
/** Why a payload was refused: the `reason` label, and a fixed phrase for the audit line. */
type Refusal = { reason: string; detail: string };

export interface SparkplugDeps {
  contexts: ClientContexts;
  /** Which devices have DBIRTH certificates, per edge node: the node's, or the cluster's. */
  certificateIndex: DeviceCertificateIndex;
  metrics: SluiceMetrics;
  audit: AuditLog;
  log: Logger;
}

/** A publish aedes is about to make for a client that is not the one it is handed (a stored will). */
function isStoredWill(client: Client | null, packet: PublishPacket): boolean {
  return (
    client === null ||
    ((packet as { brokerId?: string }).brokerId !== undefined && !isWillOf(client, packet))
  );
}

/**
 * Sparkplug B on a node (`sparkplug`): identity binding in front of the ACL, payload validation
 * and NDEATH timestamps on the publish path, and, on every publish the node makes, birth
 * certificates (Aware), the census of edge nodes online and the per-group counts.
 */
export class Sparkplug {
  private readonly groups: GroupLabels;
  private readonly binding: IdentityBinding | undefined;
  private readonly validated: NamePatterns | undefined;
  private readonly log: Logger;
  private wrapped: { inner: Authorizer; outer: Authorizer } | undefined;

  constructor(
    private readonly config: SparkplugConfig,
    private readonly deps: SparkplugDeps,
  ) {
    this.groups = new GroupLabels(config.metricGroups);
    this.binding = config.bindIdentity && new IdentityBinding(config.bindIdentity);
    this.validated = config.validatePayloads && new NamePatterns(config.validatePayloads.groups);
    this.log = deps.log.child({ module: "sparkplug" });
  }

  /** The ACL with the Sparkplug rules in front (the same object while the ACL stays the same). */
  authorizer(inner: Authorizer): Authorizer {
    if (this.binding === undefined && !this.config.aware) return inner;
    if (this.wrapped?.inner !== inner) {
      const outer = new SparkplugAuthorizer(inner, {
        binding: this.binding,
        guardCertificates: this.config.aware,
        onRefused: (subject, topic, group, reason) =>
          this.refused(subjectFields(subject), topic, group, reason),
      });
      this.wrapped = { inner, outer };
    }
    return this.wrapped.outer;
  }

  /** `authorizePublish` with payload validation and NDEATH timestamps after the other rules. */
  observePublish(next: AuthorizePublish): AuthorizePublish {
    if (this.validated === undefined && !this.config.rewriteDeathTimestamp) return next;
    return (client, packet) => {
      const result = next(client, packet);
      if (!packet.topic.startsWith(NAMESPACE_PREFIX)) return result;
      if (result instanceof Promise) return result.then(() => this.inspect(client, packet));
      this.inspect(client, packet);
      return result;
    };
  }

  /** Listens to the broker's publishes: births, deaths, the census and the certificates. */
  install(broker: Aedes): void {
    const census = new EdgeNodeCensus((group, change) =>
      this.deps.metrics.markSparkplugEdgeNode(group, change),
    );
    const certificates = this.config.aware
      ? new BirthCertificates(broker, this.deps.certificateIndex, (error) =>
          this.log.error(
            { event: "sparkplug.certificate_failed", err: error },
            "birth certificate not stored",
          ),
        )
      : undefined;
    broker.on("publish", (packet, client) => {
      if (!packet.topic.startsWith(NAMESPACE_PREFIX)) return;
      const topic = parseSparkplugTopic(packet.topic);
      if (topic === undefined || (topic.kind !== "node" && topic.kind !== "device")) return;
      const own = client !== null && !isStoredWill(client, packet);
      switch (topic.type) {
        case "NBIRTH":
        case "DBIRTH": {
          const label = this.groups.admit(topic.group);
          this.deps.metrics.markSparkplugBirth(label, topic.kind);
          if (topic.kind === "node" && own && client !== null) census.born(client, label);
          certificates?.received(topic, packet.payload as Buffer);
          return;
        }
        case "NDEATH":
        case "DDEATH":
          this.deps.metrics.markSparkplugDeath(this.groups.labelOf(topic.group), topic.kind);
          if (topic.kind === "node" && own && client !== null) census.gone(client);
          return;
        default:
          return;
      }
    });
    broker.on("clientDisconnect", (client) => census.gone(client));
  }

  /**
   * tck-id-conformance-mqtt-aware-ndeath-timestamp: an NDEATH carries the time it is sent on,
   * in UTC (with `rewriteDeathTimestamp`).
   */
  stampDeath(
    packet: PublishPacket,
    topic = packet.topic.startsWith(NAMESPACE_PREFIX)
      ? parseSparkplugTopic(packet.topic)
      : undefined,
  ): void {
    if (!this.config.rewriteDeathTimestamp || topic?.kind !== "node" || topic.type !== "NDEATH")
      return;
    const rewritten = withTimestamp(packet.payload as Buffer, Date.now());
    if (rewritten !== undefined) packet.payload = rewritten;
  }

  private inspect(client: Client | null, packet: PublishPacket): void {
    const topic = parseSparkplugTopic(packet.topic);
    if (topic === undefined) return;
    const will = isStoredWill(client, packet) || isWillOf(client, packet);
    this.stampDeath(packet, topic);
    // A will goes out whatever it holds: a host told nothing of a death would think it alive.
    if (will || client === null || !this.validates(topic)) return;
    const refusal = this.payloadRefusal(client, topic, packet);
    if (refusal === undefined) return;
    const group = topic.kind === "state" ? undefined : topic.group;
    const subject = auditSubject(this.deps.contexts.get(client));
    this.refused(subject, packet.topic, group, refusal.reason, refusal.detail);
    throw new PayloadInvalidError(packet.topic);
  }

  private validates(topic: SparkplugTopic): boolean {
    if (this.validated === undefined) return false;
    // STATE is outside every group: checked whenever validation is on.
    if (topic.kind === "state") return true;
    return topic.group === undefined || this.validated.matches(topic.group);
  }

  private payloadRefusal(
    client: Client,
    topic: SparkplugTopic,
    packet: PublishPacket,
  ): Refusal | undefined {
    const payload = packet.payload as Buffer;
    if (topic.kind === "invalid") return { reason: "topic", detail: "not a Sparkplug topic" };
    if (topic.kind === "state") {
      // Sparkplug 3.0: STATE is QoS 1, retained, JSON (tck-id-host-topic-phid-birth-qos/-retain).
      return packet.qos === 1 && packet.retain && isStatePayload(payload)
        ? undefined
        : {
            reason: "state_format",
            detail: "STATE must be QoS 1, retained, JSON {online, timestamp}",
          };
    }
    const check = checkPayload(topic.type, payload);
    if (!check.ok) return check;
    if (topic.type !== "NBIRTH") return undefined;
    // tck-id-payloads-nbirth-bdseq-repeat: the NBIRTH's bdSeq is the one its NDEATH will carries.
    const will = willOf(client);
    const expected =
      will !== undefined && will.topic === `${NAMESPACE_PREFIX}${topic.group}/NDEATH/${topic.edge}`
        ? deathBdSeq(will.payload)
        : undefined;
    return expected !== undefined && expected === check.bdSeq
      ? undefined
      : { reason: "bdseq", detail: "NBIRTH bdSeq differs from the NDEATH will's" };
  }

  private refused(
    subject: AuditSubject,
    topic: string,
    group: string | undefined,
    reason: string,
    detail?: string,
  ): void {
    this.deps.metrics.markSparkplugRefused(this.groups.labelOf(group), reason);
    this.deps.audit.sparkplugRefused(subject, reason, topic, detail);
  }
}

function subjectFields(subject: AclSubject): AuditSubject {
  return {
    clientId: subject.clientId,
    username: subject.username,
    certificateCn: subject.certificateCn,
  };
}
