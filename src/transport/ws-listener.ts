import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { TLSSocket, TlsOptions } from "node:tls";
import { createWebSocketStream, type WebSocket, WebSocketServer } from "ws";
import type { ListenerConfig } from "../config/schema.js";
import {
  type ClientOrigin,
  type Listener,
  type ListenerEvents,
  PendingRefusals,
  rawSocket,
  socketOrigin,
  verifiedPeerCertificate,
} from "./listener.js";
import { closeServer, gateConnections, HTTP_TIMEOUT_CHECK_MS, listenOn } from "./server-utils.js";
import type { TrustedProxies } from "./trusted-proxies.js";

type WsListenerConfig = Extract<ListenerConfig, { type: "ws" | "wss" }>;

/** Subprotocols MQTT clients offer, in order of preference (the spec's name first). */
const MQTT_SUBPROTOCOLS = ["mqtt", "mqttv3.1"];

/**
 * MQTT over WebSocket (`ws`) or secure WebSocket (`wss`) on one URL path, for browsers and
 * gateways that can only leave a site through HTTP(S) proxies. Behind trusted proxies
 * (`trustedProxies`), the client's address is taken from X-Forwarded-For.
 */
export class WsListener implements Listener {
  private readonly server: Server;
  private readonly wss: WebSocketServer;
  private readonly reloadMaterial: (() => TlsOptions) | undefined;

  constructor(
    readonly config: WsListenerConfig,
    events: ListenerEvents,
    options: {
      maxPacketBytes: number;
      tls?: { options: () => TlsOptions; handshakeTimeoutMs: number };
      /** Whose X-Forwarded-For to believe; without it the header is ignored. */
      trustedProxies?: TrustedProxies;
    },
  ) {
    this.reloadMaterial = options.tls?.options;
    // Refused sockets whose handshake and upgrade go on so that their CONNECT can be answered
    // in a WebSocket frame.
    const refused = new PendingRefusals();
    const plainHttp = (_req: IncomingMessage, res: ServerResponse): void => {
      res.writeHead(426, {
        "content-type": "text/plain",
        upgrade: "websocket",
        connection: "close",
      });
      res.end("MQTT over WebSocket: connect with a WebSocket client\n");
    };
    if (config.type === "wss") {
      if (!options.tls) throw new TypeError("a wss listener needs TLS options");
      const server = createHttpsServer(
        {
          ...options.tls.options(),
          handshakeTimeout: options.tls.handshakeTimeoutMs,
          connectionsCheckingInterval: HTTP_TIMEOUT_CHECK_MS,
        },
        plainHttp,
      );
      server.on("tlsClientError", (error, socket) => {
        socket.destroy();
        // A refused socket is counted once, under its refusal.
        if (!refused.has(socket)) events.onRejected("tls_handshake", error);
      });
      this.server = server;
    } else {
      this.server = createServer({ connectionsCheckingInterval: HTTP_TIMEOUT_CHECK_MS }, plainHttp);
    }
    // Sockets of trusted proxies are admitted at their upgrade request, where X-Forwarded-For
    // names the client; every other socket on accept, before its TLS handshake or HTTP request.
    const trusted = options.trustedProxies;
    const admittedAtUpgrade = new WeakSet<Socket>();
    gateConnections(this.server, (socket) => {
      const origin = socketOrigin(socket);
      if (trusted?.has(origin.remoteAddress)) {
        admittedAtUpgrade.add(socket);
        return true;
      }
      return refused.hold(socket, events.admitSocket(socket, origin, config.type));
    });
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 10_000;

    this.wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      // One frame never needs to exceed the largest MQTT packet (plus its fixed header).
      maxPayload: options.maxPacketBytes + 5,
      handleProtocols: (offered) => MQTT_SUBPROTOCOLS.find((p) => offered.has(p)) ?? false,
    });

    this.server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on("error", () => socket.destroy());
      const raw = rawSocket(req.socket);
      let reply = refused.take(raw);
      const path = (req.url ?? "/").split("?")[0];
      if (path !== config.path) {
        socket.end("HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        // A refused socket is counted once, under its refusal.
        if (reply === undefined) events.onRejected("ws_bad_path");
        return;
      }
      const origin = requestOrigin(req.socket, req, trusted);
      if (admittedAtUpgrade.has(raw)) {
        admittedAtUpgrade.delete(raw);
        const admission = events.admitSocket(raw, origin, config.type);
        if (admission === "refused") return;
        if (admission !== "admitted") reply = admission;
      }
      this.wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
        const stream = createWebSocketStream(ws);
        if (reply !== undefined) {
          reply.answer(stream);
          return;
        }
        const peerCertificate =
          config.type === "wss" ? verifiedPeerCertificate(req.socket as TLSSocket) : undefined;
        events.onConnection({
          stream,
          socket: req.socket,
          listener: config.type,
          ...origin,
          request: req,
          ...(peerCertificate ? { peerCertificate } : {}),
        });
      });
    });
    this.wss.on("wsClientError", (error, socket) => {
      socket.destroy();
      events.onRejected("ws_handshake", error);
    });
  }

  listen(): Promise<AddressInfo> {
    return listenOn(this.server, this.config.host, this.config.port);
  }

  stopAccepting(): Promise<void> {
    return closeServer(this.server);
  }

  reloadTls(): void {
    if (this.reloadMaterial) (this.server as HttpsServer).setSecureContext(this.reloadMaterial());
  }
}

/** The client of an upgrade request: the TCP peer, or whom a trusted proxy forwarded for. */
function requestOrigin(
  socket: Socket,
  request: IncomingMessage,
  trusted: TrustedProxies | undefined,
): ClientOrigin {
  const peer = socketOrigin(socket);
  const forwarded = trusted?.forwardedClient(
    peer.remoteAddress,
    request.headers["x-forwarded-for"],
  );
  if (forwarded === undefined) return peer;
  return { remoteAddress: forwarded, remotePort: 0, proxyAddress: peer.remoteAddress };
}
