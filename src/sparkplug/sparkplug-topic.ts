/** The Sparkplug B namespace: every Sparkplug topic starts with it. */
export const NAMESPACE = "spBv1.0";
export const NAMESPACE_PREFIX = `${NAMESPACE}/`;
/** Where an Aware server republishes births (Sparkplug 3.0, tck-id-conformance-mqtt-aware-*). */
export const CERTIFICATES_PREFIX = `$sparkplug/certificates/${NAMESPACE}/`;

const NODE_TYPES = ["NBIRTH", "NDEATH", "NDATA", "NCMD"] as const;
const DEVICE_TYPES = ["DBIRTH", "DDEATH", "DDATA", "DCMD"] as const;
export type NodeMessageType = (typeof NODE_TYPES)[number];
export type DeviceMessageType = (typeof DEVICE_TYPES)[number];
export type MessageType = NodeMessageType | DeviceMessageType;

/** A topic of the Sparkplug B namespace, read level by level. */
export type SparkplugTopic =
  | { kind: "node"; type: NodeMessageType; group: string; edge: string }
  | { kind: "device"; type: DeviceMessageType; group: string; edge: string; device: string }
  | { kind: "state"; hostId: string }
  /** Under `spBv1.0/` but none of the above (an unknown type, a level too many or too few). */
  | { kind: "invalid"; group: string | undefined };

const isNodeType = (type: string): type is NodeMessageType =>
  (NODE_TYPES as readonly string[]).includes(type);
const isDeviceType = (type: string): type is DeviceMessageType =>
  (DEVICE_TYPES as readonly string[]).includes(type);

/**
 * Reads a topic of the Sparkplug B namespace; undefined for any other topic. Topic levels are
 * non-empty: the ids may not contain `/`, `+` or `#` (tck-id-intro-group-id-chars and its
 * edge node and device siblings), and MQTT already keeps wildcards out of topic names.
 */
export function parseSparkplugTopic(topic: string): SparkplugTopic | undefined {
  if (!topic.startsWith(NAMESPACE_PREFIX)) return undefined;
  const levels = topic.slice(NAMESPACE_PREFIX.length).split("/");
  if (levels.some((level) => level.length === 0)) {
    return { kind: "invalid", group: levels[0] || undefined };
  }
  const [group, type, edge, device] = levels;
  if (group === "STATE" && levels.length === 2 && type !== undefined) {
    return { kind: "state", hostId: type };
  }
  if (group === undefined || type === undefined || edge === undefined) {
    return { kind: "invalid", group };
  }
  if (levels.length === 3 && isNodeType(type)) return { kind: "node", type, group, edge };
  if (levels.length === 4 && device !== undefined && isDeviceType(type)) {
    return { kind: "device", type, group, edge, device };
  }
  return { kind: "invalid", group };
}

/** The retained topic an Aware server keeps a birth on. */
export function certificateTopic(
  birth:
    | { kind: "node"; group: string; edge: string }
    | { kind: "device"; group: string; edge: string; device: string },
): string {
  return birth.kind === "node"
    ? `${CERTIFICATES_PREFIX}${birth.group}/NBIRTH/${birth.edge}`
    : `${CERTIFICATES_PREFIX}${birth.group}/DBIRTH/${birth.edge}/${birth.device}`;
}

/** The filter that matches every DBIRTH certificate of one edge node. */
export function deviceCertificatesOf(group: string, edge: string): string {
  return `${CERTIFICATES_PREFIX}${group}/DBIRTH/${edge}/+`;
}

export function isCertificateTopic(topic: string): boolean {
  return topic === "$sparkplug" || topic.startsWith("$sparkplug/");
}
