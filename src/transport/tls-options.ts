import { readFileSync } from "node:fs";
import { createSecureContext, type TlsOptions } from "node:tls";
import type { TlsListenerConfig } from "../config/schema.js";
import { ConfigError } from "../errors.js";

/**
 * Reads a TLS listener's files into server options and proves they load (key matches cert,
 * PEM parses), so bad material is a configuration error at start, not a failed handshake later.
 */
export function buildTlsOptions(config: TlsListenerConfig, key: string): TlsOptions {
  const read = (field: "cert" | "key" | "ca" | "crl", path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (error) {
      throw new ConfigError([
        `${key}.${field}: cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? error})`,
      ]);
    }
  };
  const options: TlsOptions = {
    cert: read("cert", config.cert),
    key: read("key", config.key),
    minVersion: config.minVersion,
    requestCert: config.requestCert,
    // A requested but unverified certificate is tolerated here and simply not trusted later.
    rejectUnauthorized: config.requireClientCert,
    ...(config.passphrase === undefined ? {} : { passphrase: config.passphrase }),
    ...(config.ca === undefined ? {} : { ca: read("ca", config.ca) }),
    ...(config.crl === undefined ? {} : { crl: read("crl", config.crl) }),
    ...(config.ciphers === undefined ? {} : { ciphers: config.ciphers }),
  };
  try {
    createSecureContext(options);
  } catch (error) {
    throw new ConfigError([`${key}: TLS material does not load: ${(error as Error).message}`], {
      cause: error,
    });
  }
  return options;
}
