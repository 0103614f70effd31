import type { Emitter } from "./emitters.js";
import type { ReplicaAcks } from "./replica-acks.js";

type Done = (error?: Error) => void;

/**
 * The emitter aedes publishes through, with a QoS 1 publish complete (and so its PUBACK, or a
 * will's removal, sent) only once Redis' replicas hold what it wrote: the retained message and
 * the offline sessions' queues written before the PUBLISH, shared-group entries written beside
 * it. A confirmation that fails fails the publish: aedes closes the publisher's connection
 * without a PUBACK, and the client sends again. QoS 0 waits for nothing; nor does QoS 2, whose
 * PUBREC waits for the confirmation of its packet id's record, written with the PUBLISH (a
 * failed publish there would publish the client's resend again).
 */
export function confirmEmits(emitter: Emitter, acks: ReplicaAcks): Emitter {
  const emit = emitter.emit.bind(emitter);
  emitter.emit = function emitConfirmed(packet: { qos?: number }, done?: Done) {
    if (done === undefined || packet.qos !== 1)
      return emit(packet as Parameters<Emitter["emit"]>[0], done);
    // Taken before its first write: one answered by a primary that failed over before the
    // confirmation is not confirmed by the new one.
    const epoch = acks.epochOf(packet);
    return emit(packet as Parameters<Emitter["emit"]>[0], (error) => {
      if (error) done(error);
      else acks.confirmed(epoch).then(() => done(), done);
    });
  } as Emitter["emit"];
  return emitter;
}
