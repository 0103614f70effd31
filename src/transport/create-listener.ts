import type { ListenerConfig } from "../config/schema.js";
import type { Listener, ListenerEvents } from "./listener.js";
import { TcpListener } from "./tcp-listener.js";
import { buildTlsOptions } from "./tls-options.js";
import { WsListener } from "./ws-listener.js";

export interface ListenerSettings {
  maxPacketBytes: number;
  /** A TLS handshake must finish within this, like a CONNECT must arrive within it. */
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
  switch (config.type) {
    case "tcp":
      return new TcpListener(config, events);
    case "tls":
      return new TcpListener(config, events, {
        options: () => buildTlsOptions(config, key),
        handshakeTimeoutMs: settings.connectTimeoutMs,
      });
    case "ws":
      return new WsListener(config, events, { maxPacketBytes: settings.maxPacketBytes });
    case "wss":
      return new WsListener(config, events, {
        maxPacketBytes: settings.maxPacketBytes,
        tls: {
          options: () => buildTlsOptions(config, key),
          handshakeTimeoutMs: settings.connectTimeoutMs,
        },
      });
  }
}
