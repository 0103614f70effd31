import type { StoredPacket } from "./persistence-types.js";

/**
 * The order a resumed session's stored queue is sent in: its PUBRELs first (in the order their
 * PUBRECs came), then its PUBLISHes (in the order first sent). Every stored PUBREL answers a
 * PUBREC received before this connection, so before any PUBREC the resent PUBLISHes draw, and the
 * server sends PUBRELs in the order the PUBRECs came [MQTT-4.6.0-4]. Sent where they lie, a PUBREL
 * behind resent PUBLISHes would go out after the PUBRELs of their fresh PUBRECs, and a receiver
 * that hands a QoS 2 message on at PUBREL (MQTT.js does) would get it after later ones
 * [MQTT-4.6.0-6].
 *
 * Always a new array, also for a queue without PUBRELs: the memory persistence hands aedes this
 * copy of a queue that changes while aedes walks it.
 */
export function inResendOrder<Packet extends Pick<StoredPacket, "cmd">>(
  queue: readonly Packet[],
): Packet[] {
  const released: Packet[] = [];
  const published: Packet[] = [];
  for (const packet of queue) (packet.cmd === "pubrel" ? released : published).push(packet);
  return released.length === 0 ? [...queue] : [...released, ...published];
}
