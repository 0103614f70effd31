import tahu from "sparkplug-payload/lib/sparkplugPayloadProto.js";
import type { MessageType } from "./sparkplug-topic.js";

/** Eclipse Tahu's Sparkplug B protobuf message, decoded as it is on the wire. */
const { Payload } = tahu.org.eclipse.tahu.protobuf;
type Payload = InstanceType<typeof Payload>;

/** What a refused payload lacked (the `reason` of metrics and audit lines). */
export type PayloadRefusal = "malformed" | "bdseq";

export type PayloadCheck =
  | { ok: true; bdSeq: string | undefined }
  | { ok: false; reason: PayloadRefusal; detail: string };

const BD_SEQ = "bdSeq";

const has = (payload: Payload, field: "seq" | "timestamp"): boolean =>
  Object.hasOwn(payload, field) && payload[field] !== null;

function decode(bytes: Uint8Array): Payload | undefined {
  try {
    return Payload.decode(bytes);
  } catch {
    return undefined;
  }
}

/** The value of the payload's `bdSeq` metric, as text (it is a 64-bit integer on the wire). */
function bdSeqOf(payload: Payload): string | undefined {
  const metric = payload.metrics.find((m) => m.name === BD_SEQ);
  if (metric === undefined) return undefined;
  if (Object.hasOwn(metric, "longValue")) return String(metric.longValue);
  if (Object.hasOwn(metric, "intValue")) return String(metric.intValue);
  return undefined;
}

const refuse = (reason: PayloadRefusal, detail: string): PayloadCheck => ({
  ok: false,
  reason,
  detail,
});

/**
 * Decodes a Sparkplug B payload and checks what the spec requires of its message type:
 * a `seq` of 0-255 on everything an edge node sends but NDEATH (tck-id-payloads-sequence-num-*),
 * a timestamp on births, data and commands (tck-id-payloads-*-timestamp), and a `bdSeq` metric
 * on NBIRTH and NDEATH (tck-id-payloads-nbirth-bdseq, tck-id-payloads-ndeath-bdseq).
 */
export function checkPayload(type: MessageType, bytes: Uint8Array): PayloadCheck {
  const payload = decode(bytes);
  if (payload === undefined) return refuse("malformed", "not a Sparkplug B payload");
  const needsSeq = type !== "NDEATH" && type !== "NCMD" && type !== "DCMD";
  if (needsSeq) {
    if (!has(payload, "seq")) return refuse("malformed", `${type} without seq`);
    const seq = Number(payload.seq);
    if (!(seq >= 0 && seq <= 255)) return refuse("malformed", `${type} seq outside 0-255`);
  }
  if (type !== "NDEATH" && type !== "DDEATH" && !has(payload, "timestamp")) {
    return refuse("malformed", `${type} without timestamp`);
  }
  const bdSeq = bdSeqOf(payload);
  if ((type === "NBIRTH" || type === "NDEATH") && bdSeq === undefined) {
    return refuse("bdseq", `${type} without a bdSeq metric`);
  }
  return { ok: true, bdSeq };
}

/** The `bdSeq` an NDEATH will carries, or undefined when it does not decode or has none. */
export function deathBdSeq(bytes: Uint8Array): string | undefined {
  const payload = decode(bytes);
  return payload === undefined ? undefined : bdSeqOf(payload);
}

/**
 * The payload with its timestamp set to `now` (ms since the epoch, UTC); undefined when it does
 * not decode, so that a death is passed on as it came rather than lost.
 */
export function withTimestamp(bytes: Uint8Array, now: number): Buffer | undefined {
  const payload = decode(bytes);
  if (payload === undefined) return undefined;
  payload.timestamp = now;
  return Buffer.from(Payload.encode(payload).finish());
}

/** STATE (Sparkplug 3.0): UTF-8 JSON `{"online": boolean, "timestamp": number}`. */
export function isStatePayload(bytes: Uint8Array): boolean {
  try {
    const state: unknown = JSON.parse(Buffer.from(bytes).toString("utf8"));
    return (
      typeof state === "object" &&
      state !== null &&
      typeof (state as { online?: unknown }).online === "boolean" &&
      typeof (state as { timestamp?: unknown }).timestamp === "number"
    );
  } catch {
    return false;
  }
}
