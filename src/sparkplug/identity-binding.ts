import type { SparkplugConfig } from "../config/sparkplug-schema.js";
import type { AclSubject } from "../security/authorizer.js";
import { NamePatterns } from "./name-pattern.js";
import type { SparkplugTopic } from "./sparkplug-topic.js";

type BindIdentityConfig = NonNullable<SparkplugConfig["bindIdentity"]>;

/** Why a publish under `spBv1.0/` was refused (the `reason` of metrics and audit lines). */
export type BindingRefusal = "identity" | "command" | "state" | "topic";

/** Registry device groups: `spb:<group>` makes the device an edge node of that group. */
export const REGISTRY_GROUP_PREFIX = "spb:";
/** Registry device group that makes the device a Host Application. */
export const REGISTRY_HOST_GROUP = "sparkplug-host";

/** Who asks: the ACL's subject (the certificate's CN included). */
export type BindingSubject = AclSubject;

const escapeRegExp = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** `{group}.{edge}` to a regular expression capturing the group (shortest) and the edge node id. */
function compilePattern(pattern: string): RegExp {
  const source = pattern
    .split(/(\{group\}|\{edge\})/)
    .map((part) => {
      if (part === "{group}") return "(?<group>[^/+#]+?)";
      if (part === "{edge}") return "(?<edge>[^/+#]+)";
      return escapeRegExp(part);
    })
    .join("");
  return new RegExp(`^${source}$`, "s");
}

/**
 * Sparkplug identity binding (`sparkplug.bindIdentity`): which Sparkplug topics an identity may
 * publish. Deny by default: an identity that names no edge node and is no Host Application
 * publishes nothing under `spBv1.0/`.
 */
export class IdentityBinding {
  private readonly pattern: RegExp;
  private readonly hosts: NamePatterns;

  constructor(private readonly config: BindIdentityConfig) {
    this.pattern = compilePattern(config.pattern);
    this.hosts = new NamePatterns(config.hostApplications);
  }

  /** The refusal for `subject` publishing on `topic`, or undefined when it may. */
  check(subject: BindingSubject, topic: SparkplugTopic): BindingRefusal | undefined {
    const name = this.nameOf(subject);
    switch (topic.kind) {
      case "invalid":
        return "topic";
      case "state":
        // A host announces only itself: another's STATE could take that host offline for
        // every edge node that follows it.
        return this.isHost(subject, name) && topic.hostId === name ? undefined : "state";
      case "node":
      case "device": {
        if (topic.type === "NCMD" || topic.type === "DCMD") {
          return this.isHost(subject, name) ? undefined : "command";
        }
        return this.isEdge(subject, name, topic.group, topic.edge) ? undefined : "identity";
      }
    }
  }

  private nameOf(subject: BindingSubject): string | undefined {
    switch (this.config.from) {
      case "username":
        return subject.username;
      case "clientId":
        return subject.clientId;
      case "certificateCn":
        return subject.certificateCn;
    }
  }

  private isHost(subject: BindingSubject, name: string | undefined): boolean {
    if (subject.device?.groups.includes(REGISTRY_HOST_GROUP)) return true;
    return name !== undefined && this.hosts.matches(name);
  }

  private isEdge(
    subject: BindingSubject,
    name: string | undefined,
    group: string,
    edge: string,
  ): boolean {
    if (name === undefined) return false;
    const match = this.pattern.exec(name)?.groups;
    if (match?.group === group && match.edge === edge) return true;
    // A registry device is the edge node named like it, in each group its `spb:` groups name.
    return (
      subject.device !== undefined &&
      name === edge &&
      subject.device.groups.includes(`${REGISTRY_GROUP_PREFIX}${group}`)
    );
  }
}
