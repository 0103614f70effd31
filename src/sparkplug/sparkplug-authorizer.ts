import type { AclSubject, Authorizer } from "../security/authorizer.js";
import type { BindingRefusal, IdentityBinding } from "./identity-binding.js";
import { isCertificateTopic, NAMESPACE_PREFIX, parseSparkplugTopic } from "./sparkplug-topic.js";

export type AuthorizerRefusal = BindingRefusal | "certificate";

export interface SparkplugAuthorizerOptions {
  /** `sparkplug.bindIdentity`; absent: Sparkplug topics are left to the ACL. */
  binding: IdentityBinding | undefined;
  /** Only the node writes `$sparkplug/` (`sparkplug.aware`): a client could forge certificates. */
  guardCertificates: boolean;
  onRefused(
    subject: AclSubject,
    topic: string,
    group: string | undefined,
    reason: AuthorizerRefusal,
  ): void;
}

/**
 * The ACL with Sparkplug's publish rules in front. Being an Authorizer, it decides wills at
 * CONNECT too: an edge node cannot leave an NDEATH for another edge node as its will.
 */
export class SparkplugAuthorizer implements Authorizer {
  constructor(
    private readonly inner: Authorizer,
    private readonly options: SparkplugAuthorizerOptions,
  ) {}

  canPublish(subject: AclSubject, topic: string): boolean {
    const { binding, guardCertificates, onRefused } = this.options;
    if (guardCertificates && isCertificateTopic(topic)) {
      onRefused(subject, topic, undefined, "certificate");
      return false;
    }
    if (binding !== undefined && topic.startsWith(NAMESPACE_PREFIX)) {
      const parsed = parseSparkplugTopic(topic);
      const refusal = parsed === undefined ? undefined : binding.check(subject, parsed);
      if (refusal !== undefined) {
        const group = parsed?.kind === "state" ? undefined : parsed?.group;
        onRefused(subject, topic, group, refusal);
        return false;
      }
    }
    return this.inner.canPublish(subject, topic);
  }

  canRead(subject: AclSubject, topic: string): boolean {
    return this.inner.canRead(subject, topic);
  }

  canSubscribe(subject: AclSubject, filter: string): boolean {
    return this.inner.canSubscribe(subject, filter);
  }
}
