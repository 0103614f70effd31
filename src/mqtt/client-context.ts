import type { Socket } from "node:net";
import type { Client } from "aedes";
import type { MqttProtocolLabel } from "../protocol/protocol-version.js";
import type { AuthExchangeOutcome, Identity } from "../security/authenticator.js";
import { type ClientConnection, rawSocket } from "../transport/listener.js";

/**
 * What Sluice knows about one aedes client beyond what aedes keeps: its connection (the
 * fields copied here, not the record referenced: one object per connection instead of two)
 * and what its CONNECT established.
 */
export interface ClientContext extends Omit<ClientConnection, "request"> {
  readonly client: Client;
  /** The address its socket's quota counts against (`limits.connections`), given back at close. */
  readonly admittedAddress: string | undefined;
  /** When the socket was handed to the broker (ms since the epoch). */
  readonly connectedAt: number;
  /** The CONNECT carried a zero-length client id (aedes assigns one before we see it). */
  emptyClientId: boolean;
  /** The keep-alive the CONNECT asked for (0: none). */
  keepaliveSeconds?: number;
  /** The CONNECT's will topic, authorized once the identity is known. */
  willTopic?: string;
  identity?: Identity;
  /** The CONNACK must report a session present (known only after authentication). */
  sessionPresent: boolean;
  /** In a cluster, the epoch its CONNECT claimed the client id with (ClientOwnership). */
  ownerEpoch: number | undefined;
  /**
   * Filters granted but perhaps not yet in aedes' client.subscriptions (a persistent session's
   * are stored first): counted against `limits.subscriptions.perClient` meanwhile.
   */
  pendingFilters?: Set<string>;
  /** The username counted against its connection quota, to release when the connection ends. */
  countedUsername?: string;
  /** Ends the connection's publish limits when it closes (present when limits are set). */
  endPublishLimits?: () => void;
  /** The MQTT version the connection was registered with; `pending` until its CONNACK. */
  protocol: MqttProtocolLabel;
  /** What its enhanced authentication exchange (MQTT 5 AUTH) decided, if it had one. */
  authExchange: AuthExchangeOutcome | undefined;
}

/**
 * Per-client context, keyed by the TCP socket that was admitted for the client (the one the
 * server accepted, under any TLS or WebSocket): one key serves the lookups by aedes client
 * and by socket, so that the one 'close' listener a socket gets at admission releases
 * everything (each key of a WeakMap costs an idle connection about 50 bytes). Weak, so a
 * closed client's context goes with it and nothing here needs cleaning up.
 */
export class ClientContexts {
  private readonly contexts = new WeakMap<Socket, ClientContext>();

  attach(
    client: Client,
    connection: ClientConnection,
    admittedAddress: string | undefined,
  ): ClientContext {
    // Every field from the start, even those set later: V8 then keeps them all inside the
    // object. Fields added after creation went to a separate properties array, allocated for
    // every client that connects (identity, keep-alive).
    const context: ClientContext = {
      client,
      stream: connection.stream,
      socket: connection.socket,
      listener: connection.listener,
      remoteAddress: connection.remoteAddress,
      remotePort: connection.remotePort,
      proxyAddress: connection.proxyAddress,
      peerCertificate: connection.peerCertificate,
      admittedAddress,
      connectedAt: Date.now(),
      emptyClientId: false,
      keepaliveSeconds: undefined,
      willTopic: undefined,
      identity: undefined,
      sessionPresent: false,
      ownerEpoch: undefined,
      pendingFilters: undefined,
      countedUsername: undefined,
      endPublishLimits: undefined,
      protocol: "pending",
      authExchange: undefined,
    };
    this.contexts.set(rawSocket(connection.socket), context);
    return context;
  }

  get(client: Client): ClientContext | undefined {
    // A WebSocket client's stream is not a socket: its upgrade request has the socket.
    return this.contexts.get(rawSocket(client.req ? client.req.socket : (client.conn as Socket)));
  }

  /** The context of the client on an admitted socket, if the socket got as far as aedes. */
  ofSocket(socket: Socket): ClientContext | undefined {
    return this.contexts.get(socket);
  }
}
