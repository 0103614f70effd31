import { invalidTopicFilter } from "../protocol/topic-rules.js";

/** The prefix of a shared subscription's topic filter [MQTT-4.8.2]. */
export const SHARE_PREFIX = "$share/";

/** A shared subscription's two parts: `$share/{group}/{filter}`. */
export interface SharedFilter {
  /** The Share Name. */
  readonly group: string;
  /** The topic filter the group subscribes to. */
  readonly filter: string;
}

export function isSharedFilter(topic: string): boolean {
  return topic.startsWith(SHARE_PREFIX);
}

/**
 * Splits `$share/{group}/{filter}`, or says why it is no valid shared subscription: a Share Name
 * is at least one character, without `/`, `+` or `#` [MQTT-4.8.2-1, -2]; the filter is a
 * valid topic filter.
 */
export function parseSharedFilter(topic: string): SharedFilter | { invalid: string } {
  const rest = topic.slice(SHARE_PREFIX.length);
  const slash = rest.indexOf("/");
  if (slash <= 0) return { invalid: "a shared subscription is $share/<group>/<filter>" };
  const group = rest.slice(0, slash);
  const filter = rest.slice(slash + 1);
  if (group.includes("+") || group.includes("#")) {
    return { invalid: "a share name may not contain + or #" };
  }
  const invalid = invalidTopicFilter(filter);
  return invalid === undefined ? { group, filter } : { invalid };
}

/** The one string that names a group across the cluster (group names hold no `/`). */
export function groupName(shared: SharedFilter): string {
  return `${shared.group}/${shared.filter}`;
}
