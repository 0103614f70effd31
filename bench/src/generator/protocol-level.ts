/**
 * The MQTT protocol level of a load run's clients. 4: MQTT 3.1.1. 5: MQTT 5, whose every
 * PUBLISH carries a properties length, every other one a user property (see PublisherLoop).
 */
export type ProtocolLevel = 4 | 5;

/** How tables and progress lines name a level: "3.1.1" or "5". */
export function protocolName(level: ProtocolLevel): string {
  return level === 5 ? "5" : "3.1.1";
}
