import type { Aedes } from "aedes";
import type { Backend } from "../backend/backend.js";
import type { SluiceConfig } from "../config/schema.js";
import type { BrokerSlot } from "../engine/broker-slot.js";
import type { ClientContexts } from "../mqtt/client-context.js";
import type { Logger } from "../observability/logger.js";
import type { SluiceMetrics } from "../observability/metrics.js";
import type { DeviceRegistry } from "../registry/device-registry.js";
import type { AuditLog } from "../security/audit-log.js";
import type { SecurityFiles } from "../security/security-files.js";
import type { RegistryCrl } from "./registry-crl.js";

/** What a started node's services share once its broker exists. */
export interface NodeParts {
  config: SluiceConfig;
  broker: Aedes;
  slot: BrokerSlot;
  backend: Backend;
  security: SecurityFiles;
  devices: DeviceRegistry | undefined;
  contexts: ClientContexts;
  crl: RegistryCrl;
  metrics: SluiceMetrics;
  audit: AuditLog;
  /** The node's root logger: each service takes a child of its own module. */
  log: Logger;
}
