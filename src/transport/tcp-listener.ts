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
  type Listener,
  type ListenerEvents,
  verifiedPeerCertificate,
} from "./listener.js";
import { closeServer, listenOn } from "./server-utils.js";

type StreamListenerConfig = Extract<ListenerConfig, { type: "tcp" | "tls" }>;

/** MQTT straight over TCP (`tcp`) or over TLS (`tls`); the socket itself is the MQTT stream. */
export class TcpListener implements Listener {
  private readonly server: Server;
  private readonly reloadMaterial: (() => TlsOptions) | undefined;

  constructor(
    readonly config: StreamListenerConfig,
    events: ListenerEvents,
    tls?: { options: () => TlsOptions; handshakeTimeoutMs: number },
  ) {
    this.reloadMaterial = tls?.options;
    if (config.type === "tls") {
      if (!tls) throw new TypeError("a tls listener needs TLS options");
      const server = createTlsServer({
        ...tls.options(),
        handshakeTimeout: tls.handshakeTimeoutMs,
      });
      server.on("secureConnection", (socket: TLSSocket) => {
        socket.setNoDelay(true);
        events.onConnection(streamConnection(socket, "tls", verifiedPeerCertificate(socket)));
      });
      server.on("tlsClientError", (error, socket) => {
        socket.destroy();
        events.onRejected("tls_handshake", error);
      });
      this.server = server;
    } else {
      this.server = createServer({ noDelay: true }, (socket: Socket) => {
        events.onConnection(streamConnection(socket, "tcp"));
      });
    }
  }

  listen(): Promise<AddressInfo> {
    return listenOn(this.server, this.config.host, this.config.port);
  }

  stopAccepting(): Promise<void> {
    return closeServer(this.server);
  }

  reloadTls(): void {
    if (this.reloadMaterial) (this.server as TlsServer).setSecureContext(this.reloadMaterial());
  }
}

/** A socket that is itself the MQTT stream. */
function streamConnection(
  socket: Socket,
  listener: "tcp" | "tls",
  peerCertificate?: PeerCertificate,
): ClientConnection {
  return {
    stream: socket,
    socket,
    listener,
    remoteAddress: socket.remoteAddress ?? "",
    remotePort: socket.remotePort ?? 0,
    ...(peerCertificate ? { peerCertificate } : {}),
  };
}
