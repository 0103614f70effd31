/** The `protocol` label of connection metrics: the CONNECT's version, once accepted. */
export type MqttProtocolLabel = "pending" | "3.1" | "3.1.1" | "5.0";

/** The label for a protocol level (3: MQTT 3.1, 4: 3.1.1, 5: 5.0). */
export function protocolLabel(level: number | undefined): MqttProtocolLabel {
  if (level === 5) return "5.0";
  if (level === 3) return "3.1";
  return "3.1.1";
}
