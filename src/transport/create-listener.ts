import type { ListenerConfig } from "../config/schema.js";
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
}

/** Builds the listener for one `listeners[index]` entry. Throws ConfigError on bad TLS material. */
export function createListener(
  config: ListenerConfig,
  index: number,
  events: ListenerEvents,
  settings: ListenerSettings,
): Listener {
  const key = `listeners[${index}]`;
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
          options: () => buildTlsOptions(config, key),
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
          options: () => buildTlsOptions(config, key),
          handshakeTimeoutMs: settings.connectTimeoutMs,
        },
        trustedProxies: trusted,
      });
  }
}
