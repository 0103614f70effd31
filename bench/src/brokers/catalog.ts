import { bareAedes, bareAedesCluster2, bareAedesPatched, bareAedesRedis } from "./bare-aedes.js";
import type { BrokerDefinition } from "./broker.js";
import { mosquitto } from "./mosquitto.js";
import {
  sluice,
  sluiceBaseline,
  sluiceCluster2,
  sluiceCluster2Baseline,
  sluiceRedis,
  sluiceRedisBaseline,
} from "./sluice.js";

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

/** Named on request only (`--brokers`): the same setups from another build, for before/after. */
const ON_REQUEST: readonly BrokerDefinition[] = [
  sluiceBaseline,
  sluiceRedisBaseline,
  sluiceCluster2Baseline,
];

/** Every broker `--brokers` can name. */
export const ALL_BROKERS: readonly BrokerDefinition[] = [...BROKERS, ...ON_REQUEST];

export function findBroker(name: string): BrokerDefinition {
  const broker = ALL_BROKERS.find((b) => b.name === name);
  if (!broker)
    throw new Error(
      `unknown broker "${name}"; known: ${ALL_BROKERS.map((b) => b.name).join(", ")}`,
    );
  return broker;
}
