import type { IncomingMessage } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { PeerCertificate } from "node:tls";
import type { RefusalReply } from "../admission/refusal-answers.js";
import type { ListenerConfig, ListenerType } from "../config/schema.js";
import { normalizeAddress } from "./trusted-proxies.js";

/** One accepted client connection, as the MQTT layer sees it: a byte stream plus who is on the other end. */
export interface ClientConnection {
  /** The stream aedes reads MQTT packets from and writes them to. */
  readonly stream: Duplex;
  /** The TCP socket underneath (for TLS and WebSocket, the raw socket), for addresses and byte counts. */
  readonly socket: Socket;
  readonly listener: ListenerType;
  /**
   * The client's address: the socket's peer, or, behind a trusted proxy, the address that the
   * proxy vouched for (PROXY protocol header, X-Forwarded-For). Normalised: an IPv4-mapped IPv6
   * address is given as IPv4, so per-IP keys and CIDR checks agree.
   */
  readonly remoteAddress: string;
  /** The client's port; 0 when unknown (X-Forwarded-For carries none). */
  readonly remotePort: number;
  /** The trusted proxy's address, present only when `remoteAddress` came from that proxy. */
  readonly proxyAddress?: string;
  /** The client certificate, present only when the TLS handshake verified it against the CA. */
  readonly peerCertificate?: PeerCertificate;
  /** The HTTP upgrade request of a WebSocket connection. */
  readonly request?: IncomingMessage;
}

/** Who is on the other end of a connection, as far as the transport can tell. */
export type ClientOrigin = Pick<ClientConnection, "remoteAddress" | "remotePort" | "proxyAddress">;

export type ConnectionHandler = (connection: ClientConnection) => void;

/** Why a listener refused a connection before MQTT started; becomes a metric label. */
export type ListenerRejection =
  | "tls_handshake"
  | "ws_bad_path"
  | "ws_handshake"
  /** A peer outside `trustedProxies` on a `proxyProtocol` listener. */
  | "proxy_untrusted"
  /** A malformed or oversized PROXY header, or none where one was required. */
  | "proxy_header_invalid"
  /** No complete PROXY header within `limits.connectTimeoutMs`. */
  | "proxy_header_timeout";

/**
 * What admitSocket decided: `admitted` (counted until it closes), `refused` (destroyed, no longer
 * the listener's), or a reply: refused, to be answered with a CONNACK once the listener has the
 * socket's MQTT stream (at once on plain TCP; after the TLS handshake or the WebSocket upgrade).
 */
export type SocketAdmission = "admitted" | "refused" | RefusalReply;

export interface ListenerEvents {
  /**
   * The socket quotas (and whether the node takes connections at all), asked exactly once per
   * socket, synchronously, as soon as the client's address is known and before any other work
   * is spent on it: on accept, after a PROXY header, and for TLS before the handshake (a refused
   * client costs one only within the answers' bounds). Only a WebSocket from a trusted proxy is
   * asked at its upgrade request, whose X-Forwarded-For names the client. `transport`: what the
   * listener must do before the socket's bytes are MQTT, which sets the answers' budget.
   */
  admitSocket(socket: Socket, origin: ClientOrigin, transport: ListenerType): SocketAdmission;
  /** A connection ready for MQTT, already admitted by admitSocket. */
  onConnection: ConnectionHandler;
  onRejected(reason: ListenerRejection, error?: Error): void;
}

/** A transport: accepts sockets of one kind and hands each one over as a ClientConnection. */
export interface Listener {
  readonly config: ListenerConfig;
  /** Binds and starts accepting; resolves with the bound address (useful with port 0). */
  listen(): Promise<AddressInfo>;
  /** Stops accepting new connections; established ones are left alone. Idempotent. */
  stopAccepting(): Promise<void>;
  /**
   * Re-reads the TLS material (certificate, key, CA, CRL) for new handshakes; established
   * connections keep theirs. Throws ConfigError and keeps the old material if the new does not
   * load. A no-op for plain listeners.
   */
  reloadTls(): void;
}

/** A socket's own peer, for a connection that no proxy speaks for. */
export function socketOrigin(socket: Socket): ClientOrigin {
  return {
    remoteAddress: normalizeAddress(socket.remoteAddress ?? ""),
    remotePort: socket.remotePort ?? 0,
  };
}

/**
 * The TCP socket under a connection's socket: the one the server accepted, which admitSocket
 * was given (a TLSSocket wraps it), or the socket itself.
 */
export function rawSocket(socket: Socket): Socket {
  return (socket as Socket & { _parent?: Socket | null })._parent ?? socket;
}

/** The client certificate of a TLS socket if, and only if, it was verified against the CA. */
export function verifiedPeerCertificate(socket: {
  authorized: boolean;
  getPeerCertificate(detailed?: boolean): PeerCertificate;
}): PeerCertificate | undefined {
  if (!socket.authorized) return undefined;
  const cert = socket.getPeerCertificate();
  return cert && Object.keys(cert).length > 0 ? cert : undefined;
}

/**
 * Refused raw sockets whose TLS handshake or HTTP upgrade runs on, to be answered once their
 * MQTT stream exists; an entry goes with its socket.
 */
export class PendingRefusals {
  private readonly replies = new WeakMap<Socket, RefusalReply>();

  /** Whether the listener's server goes on with `socket` (admitted, or refused with a reply). */
  hold(socket: Socket, admission: SocketAdmission): boolean {
    if (admission === "refused") return false;
    if (admission !== "admitted") this.replies.set(socket, admission);
    return true;
  }

  /** The reply waiting for the raw socket under `socket`, taken out; undefined if admitted. */
  take(socket: Socket): RefusalReply | undefined {
    const raw = rawSocket(socket);
    const reply = this.replies.get(raw);
    if (reply !== undefined) this.replies.delete(raw);
    return reply;
  }

  has(socket: Socket): boolean {
    return this.replies.has(rawSocket(socket));
  }
}
