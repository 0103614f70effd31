import { bareAedes, bareAedesCluster2, bareAedesPatched, bareAedesRedis } from "./bare-aedes.js";
import type { BrokerDefinition } from "./broker.js";
import { mosquitto } from "./mosquitto.js";
import { sluice, sluiceCluster2, sluiceRedis } from "./sluice.js";

/**
 * Every broker a scenario can measure, in the order tables list them: the references first,
 * then each Sluice setup after its bare-aedes counterpart.
 */
export const BROKERS: readonly BrokerDefinition[] = [
  mosquitto,
  bareAedes,
  bareAedesPatched,
  sluice,
  bareAedesRedis,
  sluiceRedis,
  bareAedesCluster2,
  sluiceCluster2,
];

export function findBroker(name: string): BrokerDefinition {
  const broker = BROKERS.find((b) => b.name === name);
  if (!broker)
    throw new Error(`unknown broker "${name}"; known: ${BROKERS.map((b) => b.name).join(", ")}`);
  return broker;
}
