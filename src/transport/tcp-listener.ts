import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import {
  createServer as createTlsServer,
  type PeerCertificate,
  type TLSSocket,
  type TlsOptions,
  type Server as TlsServer,
} from "node:tls";
import type { ListenerConfig } from "../config/schema.js";
import {
  type ClientConnection,
  type ClientOrigin,
  type Listener,
  type ListenerEvents,
  PendingRefusals,
  socketOrigin,
  verifiedPeerCertificate,
} from "./listener.js";
import { createProxyProtocolServer, type ProxyProtocolOptions } from "./proxy-protocol-server.js";
import { closeServer, gateConnections, listenOn } from "./server-utils.js";
import { coalesceWrites } from "./write-coalescing.js";

type StreamListenerConfig = Extract<ListenerConfig, { type: "tcp" | "tls" }>;

export interface TcpListenerOptions {
  tls?: { options: () => TlsOptions; handshakeTimeoutMs: number };
  /** Present when the listener takes PROXY protocol headers (`proxyProtocol: true`). */
  proxyProtocol?: ProxyProtocolOptions;
}

/**
 * MQTT straight over TCP (`tcp`) or over TLS (`tls`); the socket itself is the MQTT stream.
 * With PROXY protocol, a plain TCP server reads the header first and hands the socket on: to
 * MQTT directly, or to the TLS server, which then handshakes as if it had accepted the socket.
 */
export class TcpListener implements Listener {
  /** The server bound to the port. */
  private readonly server: Server;
  private readonly tlsServer: TlsServer | undefined;
  private readonly reloadMaterial: (() => TlsOptions) | undefined;

  constructor(
    readonly config: StreamListenerConfig,
    events: ListenerEvents,
    options: TcpListenerOptions = {},
  ) {
    const { tls, proxyProtocol } = options;
    this.reloadMaterial = tls?.options;
    const origins = proxyProtocol ? new OriginsByConnection() : undefined;
    // Plain MQTT: admitted, or answered on the socket itself.
    const plain = (socket: Socket, origin: ClientOrigin): void => {
      const admission = events.admitSocket(socket, origin, "tcp");
      if (admission === "admitted") events.onConnection(streamConnection(socket, "tcp", origin));
      else if (admission !== "refused") admission.answer(socket);
    };
    // Refused sockets whose handshake goes on so that their CONNECT can be answered over TLS.
    const refused = new PendingRefusals();
    if (config.type === "tls") {
      if (!tls) throw new TypeError("a tls listener needs TLS options");
      const server = createTlsServer({
        ...tls.options(),
        handshakeTimeout: tls.handshakeTimeoutMs,
      });
      server.on("secureConnection", (socket: TLSSocket) => {
        const reply = refused.take(socket);
        if (reply !== undefined) {
          origins?.take(socket);
          reply.answer(socket);
          return;
        }
        socket.setNoDelay(config.noDelay);
        events.onConnection(
          streamConnection(
            socket,
            "tls",
            origins ? origins.take(socket) : socketOrigin(socket),
            verifiedPeerCertificate(socket),
          ),
        );
      });
      server.on("tlsClientError", (error, socket) => {
        socket.destroy();
        // A refused socket is counted once, under its refusal.
        if (!refused.has(socket)) events.onRejected("tls_handshake", error);
      });
      // Behind PROXY protocol the quotas are asked once the header names the client, below.
      if (!proxyProtocol) {
        gateConnections(server, (socket) =>
          refused.hold(socket, events.admitSocket(socket, socketOrigin(socket), "tls")),
        );
      }
      this.tlsServer = server;
    }
    const tlsServer = this.tlsServer;
    if (proxyProtocol && origins) {
      this.server = createProxyProtocolServer(
        { ...proxyProtocol, noDelay: config.noDelay },
        events.onRejected,
        (socket, origin) => {
          if (!tlsServer) {
            plain(socket, origin);
            return;
          }
          if (!refused.hold(socket, events.admitSocket(socket, origin, "tls"))) return;
          origins.remember(socket, origin);
          // The TLS server takes the socket, and the bytes put back after the header, from here.
          tlsServer.emit("connection", socket);
        },
      );
    } else if (tlsServer) {
      this.server = tlsServer;
    } else {
      this.server = createServer({ noDelay: config.noDelay }, (socket: Socket) =>
        plain(socket, socketOrigin(socket)),
      );
    }
  }

  listen(): Promise<AddressInfo> {
    return listenOn(this.server, this.config.host, this.config.port);
  }

  stopAccepting(): Promise<void> {
    return closeServer(this.server);
  }

  reloadTls(): void {
    if (this.reloadMaterial) this.tlsServer?.setSecureContext(this.reloadMaterial());
  }
}

/**
 * The origins of raw sockets handed to the TLS server, until it reports the handshake done. The
 * TLS socket it creates shares the raw socket's TCP connection, so both are found by the
 * connection's address pair; an entry goes when its raw socket closes.
 */
class OriginsByConnection {
  private readonly origins = new Map<string, ClientOrigin>();

  remember(socket: Socket, origin: ClientOrigin): void {
    const key = connectionKey(socket);
    this.origins.set(key, origin);
    socket.once("close", () => this.origins.delete(key));
  }

  take(socket: Socket): ClientOrigin {
    const key = connectionKey(socket);
    const origin = this.origins.get(key);
    this.origins.delete(key);
    return origin ?? socketOrigin(socket);
  }
}

function connectionKey(socket: Socket): string {
  return `${socket.localAddress}|${socket.localPort}|${socket.remoteAddress}|${socket.remotePort}`;
}

/** A socket that is itself the MQTT stream. */
function streamConnection(
  socket: Socket,
  listener: "tcp" | "tls",
  origin: ClientOrigin,
  peerCertificate?: PeerCertificate,
): ClientConnection {
  coalesceWrites(socket);
  // Named fields, not spreads: one shape, every field inside the object (spread properties
  // landed in a separate properties array, allocated per connection).
  return {
    stream: socket,
    socket,
    listener,
    remoteAddress: origin.remoteAddress,
    remotePort: origin.remotePort,
    proxyAddress: origin.proxyAddress,
    peerCertificate,
  };
}
