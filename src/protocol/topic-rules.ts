/**
 * MQTT 3.1.1 topic name and filter syntax (section 4.7), checked where aedes does not.
 * Returns a reason when the string is invalid, undefined when it is fine.
 */

/**
 * Whether a topic is longer than `maxBytes` in UTF-8. Without encoding it, when its length
 * decides: a UTF-16 code unit takes 1 to 3 bytes (a surrogate pair, two units, takes 4).
 */
export function exceedsBytes(topic: string, maxBytes: number): boolean {
  if (topic.length > maxBytes) return true;
  if (topic.length * 3 <= maxBytes) return false;
  return Buffer.byteLength(topic, "utf8") > maxBytes;
}

/** A topic name to publish to: non-empty, no wildcards [MQTT-4.7.3-1] [MQTT-3.3.2-2]. */
export function invalidTopicName(topic: string): string | undefined {
  if (topic.length === 0) return "empty topic name";
  if (topic.includes("+") || topic.includes("#")) return "wildcard in a topic name";
  return undefined;
}

/**
 * A topic filter: non-empty; `+` only as a whole level [MQTT-4.7.1-3]; `#` only as the whole
 * last level [MQTT-4.7.1-2].
 */
export function invalidTopicFilter(filter: string): string | undefined {
  if (filter.length === 0) return "empty topic filter";
  const levels = filter.split("/");
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i] as string;
    if (level.includes("#") && (level !== "#" || i !== levels.length - 1))
      return "misplaced # in a topic filter";
    if (level.includes("+") && level !== "+") return "misplaced + in a topic filter";
  }
  return undefined;
}

/**
 * Whether a topic filter matches a topic name, walking both strings (no split per message):
 * `+` one level (an empty one too), `#` the rest and the parent, and a filter starting with a
 * wildcard matches no `$` topic [MQTT-4.7.2-1].
 */
export function filterMatches(filter: string, topic: string): boolean {
  const first = filter.charCodeAt(0);
  if ((first === 0x23 || first === 0x2b) && topic.charCodeAt(0) === 0x24) return false;
  let f = 0;
  let t = 0;
  while (f < filter.length) {
    const c = filter.charCodeAt(f);
    if (c === 0x23) return true;
    if (c === 0x2b) {
      while (t < topic.length && topic.charCodeAt(t) !== 0x2f) t++;
      f++;
    } else {
      if (t >= topic.length) {
        // `a/#` matches `a`: the filter's rest is exactly `/#`
        return t === topic.length && filter.slice(f) === "/#";
      }
      if (c !== topic.charCodeAt(t)) return false;
      f++;
      t++;
    }
  }
  return t === topic.length;
}
