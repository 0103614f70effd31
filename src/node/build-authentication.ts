import type { Backend } from "../backend/backend.js";
import type { SluiceConfig } from "../config/schema.js";
import type { BrokerSlot } from "../engine/broker-slot.js";
import type { SluiceMetrics } from "../observability/metrics.js";
import { DeviceRegistry, REGISTRY_TOPIC } from "../registry/device-registry.js";
import type { AuditLog } from "../security/audit-log.js";
import { SluiceAuthenticator } from "../security/authenticator.js";
import type { SecurityFiles } from "../security/security-files.js";

/**
 * Who may connect: the device registry (when the backend keeps one; its changes reach every
 * node) and the authenticator over it, the password file and client certificates.
 */
export function buildAuthentication(parts: {
  config: SluiceConfig;
  backend: Backend;
  security: SecurityFiles;
  slot: BrokerSlot;
  metrics: SluiceMetrics;
  audit: AuditLog;
}): { devices: DeviceRegistry | undefined; authenticator: SluiceAuthenticator } {
  const { config, backend, security, slot, metrics, audit } = parts;
  const devices =
    backend.deviceStore &&
    new DeviceRegistry(backend.deviceStore, {
      publish: (change) => slot.broadcast(REGISTRY_TOPIC, Buffer.from(JSON.stringify(change))),
    });
  const authenticator = new SluiceAuthenticator(
    { ...config.auth, passwords: () => security.passwords(), devices },
    {
      lockout: backend.lockout,
      audit,
      onFailure: (reason) => metrics.markAuthFailure(reason),
      onUsernameTargeted: () => metrics.markUsernameTargeted(),
    },
  );
  return { devices, authenticator };
}
