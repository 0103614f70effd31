import type { TlsOptions } from "node:tls";
import { isTlsListener, type ListenerConfig } from "../config/schema.js";
import type { Listener, ListenerEvents } from "./listener.js";
import type { ProxyProtocolOptions } from "./proxy-protocol-server.js";
import { TcpListener } from "./tcp-listener.js";
import { buildTlsOptions } from "./tls-options.js";
import { TrustedProxies } from "./trusted-proxies.js";
import { WsListener } from "./ws-listener.js";

export interface ListenerSettings {
  maxPacketBytes: number;
  /**
   * A TLS handshake must finish within this, like a CONNECT must arrive within it; so must a
   * PROXY protocol header.
   */
  connectTimeoutMs: number;
  /** The device CA's CRL (PEM) from the registry, for listeners with `registryCrl`. */
  registryCrl?: () => string | undefined;
}

/** Builds the listener for one `listeners[index]` entry. Throws ConfigError on bad TLS material. */
export function createListener(
  config: ListenerConfig,
  index: number,
  events: ListenerEvents,
  settings: ListenerSettings,
): Listener {
  const key = `listeners[${index}]`;
  const tlsOptions = (): TlsOptions => {
    if (!isTlsListener(config)) throw new Error(`${key} is not a TLS listener`);
    const options = buildTlsOptions(config, key);
    const extra = config.registryCrl ? settings.registryCrl?.() : undefined;
    if (extra === undefined) return options;
    return { ...options, crl: options.crl === undefined ? extra : [options.crl as Buffer, extra] };
  };
  // Nothing to decode and nothing to check on a listener that trusts no proxy.
  const trusted =
    config.trustedProxies.length > 0 ? new TrustedProxies(config.trustedProxies) : undefined;
  const proxyProtocol: ProxyProtocolOptions | undefined =
    "proxyProtocol" in config && config.proxyProtocol
      ? {
          trusted: trusted ?? new TrustedProxies([]),
          headerTimeoutMs: settings.connectTimeoutMs,
        }
      : undefined;
  switch (config.type) {
    case "tcp":
      return new TcpListener(config, events, { proxyProtocol });
    case "tls":
      return new TcpListener(config, events, {
        tls: {
          options: tlsOptions,
          handshakeTimeoutMs: settings.connectTimeoutMs,
        },
        proxyProtocol,
      });
    case "ws":
      return new WsListener(config, events, {
        maxPacketBytes: settings.maxPacketBytes,
        trustedProxies: trusted,
      });
    case "wss":
      return new WsListener(config, events, {
        maxPacketBytes: settings.maxPacketBytes,
        tls: {
          options: tlsOptions,
          handshakeTimeoutMs: settings.connectTimeoutMs,
        },
        trustedProxies: trusted,
      });
  }
}
