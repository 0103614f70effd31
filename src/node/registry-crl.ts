import { isTlsListener } from "../config/schema.js";
import { asError, problemsOf } from "../errors.js";
import type { Logger } from "../observability/logger.js";
import type { DeviceCertificateAuthority } from "../registry/device-certificate-authority.js";
import type { DeviceRegistry } from "../registry/device-registry.js";
import { refreshCrl } from "../registry/revocation.js";
import { crlSignedAt } from "../security/crl.js";
import type { Listener } from "../transport/listener.js";

/** How often a node holding the device CA checks whether the CRL needs signing again. */
const REFRESH_CHECK_MS = 60 * 60 * 1000;

/**
 * The device CA's CRL from the registry, served by the TLS listeners that take it
 * (`registryCrl: true`), and kept signed by a node that holds the CA.
 */
export class RegistryCrl {
  private pem: string | undefined;
  private listeners: readonly Listener[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly log: Logger) {}

  /** The CRL now in force, for listeners built after it arrived. */
  get current(): string | undefined {
    return this.pem;
  }

  /** The listeners to reload when the CRL changes. */
  serveTo(listeners: readonly Listener[]): void {
    this.listeners = listeners;
  }

  /** A CRL from the registry: loaded into every listener that takes it. */
  apply(pem: string): void {
    if (pem === this.pem) return;
    this.pem = pem;
    this.listeners.forEach((listener, index) => {
      const config = listener.config;
      if (!isTlsListener(config) || !config.registryCrl) return;
      try {
        listener.reloadTls();
        this.log.info(
          { event: "registry.crl_loaded", listener: `listeners[${index}]` },
          "device CRL loaded",
        );
      } catch (error) {
        this.log.error(
          {
            event: "registry.crl_failed",
            listener: `listeners[${index}]`,
            err: asError(error),
            problems: problemsOf(error),
          },
          "device CRL rejected; the previous one stays in force",
        );
      }
    });
  }

  /** Signs the CRL again before it expires: checked now, then hourly. */
  keepFresh(devices: DeviceRegistry, ca: DeviceCertificateAuthority): void {
    const refresh = (): void => {
      refreshCrl(devices, ca, crlSignedAt).then(
        (signed) => {
          if (signed) this.log.info({ event: "registry.crl_refreshed" }, "device CRL signed again");
        },
        (error: unknown) =>
          this.log.error(
            { event: "registry.crl_refresh_failed", err: asError(error) },
            "could not sign the device CRL again; retried in an hour",
          ),
      );
    };
    refresh();
    this.timer = setInterval(refresh, REFRESH_CHECK_MS);
    this.timer.unref();
  }

  close(): void {
    clearInterval(this.timer);
  }
}
