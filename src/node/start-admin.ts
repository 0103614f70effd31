import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { type AdminApiDeps, adminRoutes } from "../admin/admin-api.js";
import { AdminServer } from "../admin/admin-server.js";
import { DEVICE_CERTIFICATE_DAYS_DEFAULT, type SluiceConfig } from "../config/schema.js";
import { registeredClient, registeredClients } from "../engine/aedes-internals.js";
import { ConfigError } from "../errors.js";
import type { DeviceRegistry } from "../registry/device-registry.js";
import { loadDeviceCa } from "../registry/load-device-ca.js";
import type { ClusterSignals } from "./cluster-signals.js";
import type { NodeParts } from "./node-parts.js";

export interface AdminDeps extends NodeParts {
  admin: NonNullable<SluiceConfig["admin"]>;
  devices: DeviceRegistry;
  signals: ClusterSignals;
}

/** The admin API on its own listener: the device registry, the device CA, live sessions. */
export async function startAdmin(
  deps: AdminDeps,
): Promise<{ server: AdminServer; address: AddressInfo }> {
  const { admin, broker, backend, devices, contexts, audit, log } = deps;
  const sessions = backend.sessionDirectory(
    {
      nodeId: deps.config.nodeId,
      connected: () =>
        registeredClients(broker).map((client) => ({
          clientId: client.id,
          connectedAt: contexts.get(client)?.connectedAt,
        })),
      disconnect: (clientId) => {
        const client = registeredClient(broker, clientId);
        if (client) deps.signals.disconnectByAdmin(client);
        return client !== undefined;
      },
    },
    (topic, payload) => deps.slot.broadcast(topic, payload),
  );
  const ca = await loadDeviceCa(admin.ca).catch((error: unknown) => {
    throw new ConfigError([`admin.ca: ${(error as Error).message}`], { cause: error });
  });
  if (ca) deps.crl.keepFresh(devices, ca);
  const api: AdminApiDeps = {
    registry: devices,
    ca,
    sessions,
    enrollmentTokenSeconds: admin.enrollmentTokenSeconds,
    deviceCertificateDays: admin.ca?.deviceCertificateDays ?? DEVICE_CERTIFICATE_DAYS_DEFAULT,
    passwordUsers: () => deps.security.passwords(),
    audit,
  };
  const server = new AdminServer(
    {
      host: admin.host,
      port: admin.port,
      tokenDigests: admin.tokens,
      maxBodyBytes: admin.maxBodyBytes,
      tls: admin.tls === undefined ? undefined : readAdminTls(admin.tls),
      maxConnectionsPerIp: admin.maxConnectionsPerIp,
      unauthenticatedRequestsPerMinute: admin.unauthenticatedRequestsPerMinute,
      redis: backend.limitsRedis,
    },
    adminRoutes(api),
    audit,
    log.child({ module: "admin" }),
  );
  const address = await server.listen();
  log.info(
    { event: "admin.started", host: address.address, port: address.port },
    `admin API on ${address.address}:${address.port}`,
  );
  return { server, address };
}

function readAdminTls(tls: { cert: string; key: string; ca?: string | undefined }): {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
} {
  try {
    return {
      cert: readFileSync(tls.cert),
      key: readFileSync(tls.key),
      ...(tls.ca === undefined ? {} : { ca: readFileSync(tls.ca) }),
    };
  } catch (error) {
    throw new ConfigError([
      `admin.tls: cannot read ${(error as NodeJS.ErrnoException).path ?? "a file"} (${(error as NodeJS.ErrnoException).code ?? error})`,
    ]);
  }
}
