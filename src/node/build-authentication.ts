import type { Backend } from "../backend/backend.js";
import type { SluiceConfig } from "../config/schema.js";
import type { BrokerSlot } from "../engine/broker-slot.js";
import { type AuthConversation, EnhancedAuth } from "../engine/enhanced-auth.js";
import { auditSubject } from "../mqtt/broker-rules.js";
import type { ClientContexts } from "../mqtt/client-context.js";
import type { SluiceMetrics } from "../observability/metrics.js";
import { DeviceRegistry, REGISTRY_TOPIC } from "../registry/device-registry.js";
import type { AuditLog } from "../security/audit-log.js";
import { SluiceAuthenticator } from "../security/authenticator.js";
import { SCRAM_SHA_256, ScramExchange } from "../security/scram.js";
import type { SecurityFiles } from "../security/security-files.js";

/**
 * Who may connect: the device registry (when the backend keeps one; its changes reach every
 * node) and the authenticator over it, the password file and client certificates; and MQTT 5
 * enhanced authentication (SCRAM-SHA-256) against the same records.
 */
export function buildAuthentication(parts: {
  config: SluiceConfig;
  backend: Backend;
  security: SecurityFiles;
  slot: BrokerSlot;
  metrics: SluiceMetrics;
  audit: AuditLog;
  contexts: ClientContexts;
}): {
  devices: DeviceRegistry | undefined;
  authenticator: SluiceAuthenticator;
  enhancedAuth: EnhancedAuth | undefined;
} {
  const { config, backend, security, slot, metrics, audit, contexts } = parts;
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
  const methods = new Map<string, () => AuthConversation>();
  if (config.auth.scram) {
    methods.set(
      SCRAM_SHA_256,
      () => new ScramExchange((name) => authenticator.scramCredential(name), backend.decoySecret),
    );
  }
  const enhancedAuth =
    methods.size === 0
      ? undefined
      : new EnhancedAuth(methods, (client, outcome) => {
          const context = contexts.get(client);
          if (!outcome.reauthentication) {
            // The authenticate hook decides on the CONNECT with this, like on a password.
            if (context !== undefined) context.authExchange = outcome;
            return;
          }
          const subject = auditSubject(context);
          if (outcome.verified) audit.authSucceeded(subject, "scram");
          else {
            metrics.markAuthFailure("reauthentication_failed");
            audit.authFailed(subject, "reauthentication_failed");
          }
        });
  return { devices, authenticator, enhancedAuth };
}
