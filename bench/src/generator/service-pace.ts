import type { MqttClient } from "mqtt";

/**
 * A subscriber that processes one message at a time for a fixed `serviceMs` each, as a
 * historian writing rows or a rule engine calling out would: MQTT.js reads the next packet,
 * and sends a QoS 1 PUBACK, only once `handleMessage` calls back. The time is spent idle (a
 * timer), so a generator process can hold many such subscribers and the broker, not the
 * generator, decides how the work is spread.
 *
 * A message read within one service time of the previous completion was waiting for it: it
 * completes `serviceMs` after that completion, not after the (late) timer that ended it, so
 * timer lateness does not slow a busy subscriber below 1000 / serviceMs messages per second.
 */
export function paceMessages(client: MqttClient, serviceMs: number): void {
  if (!(serviceMs > 0)) throw new RangeError("serviceMs must be positive");
  let lastDone = 0;
  client.handleMessage = (_packet, callback) => {
    const now = performance.now();
    lastDone = (now < lastDone + serviceMs ? lastDone : now) + serviceMs;
    const wait = lastDone - now;
    if (wait < 1) setImmediate(callback);
    else setTimeout(callback, wait);
  };
}
