import type { Logger } from "../observability/logger.js";
import type { Identity } from "../security/authenticator.js";
import { normalizeSerial } from "../security/crl.js";
import { type DeviceChange, type DeviceRegistry, parseDeviceChange } from "./device-registry.js";

/** What enforcement needs from the node, kept narrow. */
export interface EnforcementEngine<Client> {
  /** This node's connected clients with their identities. */
  connected(): Iterable<{ client: Client; identity: Identity | undefined }>;
  /** Closes a connection whose credentials were revoked (no will: it is not the device's doing). */
  revoke(client: Client, identity: Identity, reason: string): void;
  /** Loads the device CA's CRL (PEM) into the TLS listeners that take it. */
  applyCrl(pem: string): void;
}

/**
 * Carries registry changes out on this node: each change message empties the device's cache
 * entry and closes the connections that lost their credentials (disabled, deleted, rotated);
 * a new CRL is loaded into the TLS listeners and closes connections made with a now revoked
 * certificate.
 */
export class DeviceEnforcement<Client> {
  private revokedSerials = new Set<string>();

  constructor(
    private readonly registry: DeviceRegistry,
    private readonly engine: EnforcementEngine<Client>,
    private readonly log: Logger,
  ) {}

  /** The serials on the device CA's revocation list, as last loaded. */
  get revoked(): ReadonlySet<string> {
    return this.revokedSerials;
  }

  /** A message on the registry topic; malformed ones are ignored. */
  changeReceived(payload: Buffer): void {
    const change = parseDeviceChange(payload);
    if (change === undefined) return;
    this.registry.changed(change);
    if (change.action === "crl") {
      this.loadCrl().catch((error: unknown) =>
        this.log.error(
          { event: "registry.crl_failed", err: error },
          "could not load the device CA's revocation list; retried at the next change",
        ),
      );
      return;
    }
    this.closeRevoked(change);
  }

  /** Reads the CRL and the revoked serials, applies them, closes what they revoke. */
  async loadCrl(): Promise<void> {
    const [pem, revoked] = await Promise.all([
      this.registry.store.crl(),
      this.registry.store.revoked(),
    ]);
    this.revokedSerials = new Set(revoked.map((r) => normalizeSerial(r.serial)));
    if (pem !== undefined) this.engine.applyCrl(pem);
    for (const { client, identity } of this.engine.connected()) {
      const serial = identity?.certificateSerial;
      if (identity !== undefined && serial !== undefined && this.revokedSerials.has(serial)) {
        this.engine.revoke(client, identity, "certificate revoked");
      }
    }
  }

  private closeRevoked(change: DeviceChange): void {
    const { action, id } = change;
    if (id === undefined || (action !== "disabled" && action !== "deleted" && action !== "rotated"))
      return;
    for (const { client, identity } of this.engine.connected()) {
      const device = identity?.device;
      if (identity === undefined || device === undefined || identity.username !== id) continue;
      // A connection made with the new credentials (rotatedAt as new as the change's) stays.
      if (
        action === "rotated" &&
        change.rotatedAt !== undefined &&
        device.rotatedAt >= change.rotatedAt
      )
        continue;
      this.engine.revoke(client, identity, `device ${action}`);
    }
  }
}
