import type { CleanupRegistry } from "../lifecycle/cleanup-registry.js";
import type { WatchedProcess } from "../system/process-cpu.js";

/** A broker set up for a measurement: where clients connect and which processes serve them. */
export interface RunningBroker {
  name: string;
  /** Where publishers connect (dealt round robin). */
  publisherUrls: string[];
  /** Where subscribers connect: another node than the publishers' in a cluster. */
  subscriberUrls: string[];
  /** Broker nodes (role "broker") and Redis (role "redis"), for CPU accounting. */
  processes: WatchedProcess[];
  stop(): Promise<void>;
}

export interface BrokerContext {
  cleanup: CleanupRegistry;
  /** A scratch folder for config files, removed by the caller. */
  workDir: string;
}

/** One kind of broker a scenario can measure. New kinds register in catalog.ts. */
export interface BrokerDefinition {
  /** The name in results: mosquitto, aedes, sluice, sluice-redis, sluice-cluster-2, ... */
  name: string;
  description: string;
  /**
   * The bare-aedes broker with the same storage and topology: the "x bare aedes" ratio of a
   * Sluice row divides by this one's figure.
   */
  bareAedesCounterpart?: string;
  start(context: BrokerContext): Promise<RunningBroker>;
}
