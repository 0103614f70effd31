import type { Client } from "aedes";
import mqttPacket, { type IAuthPacket, type IConnectPacket, type Packet } from "mqtt-packet";
import { ReasonCode } from "../errors.js";
import { closeWithWill, interceptPackets, setConnackAuthentication } from "./aedes-internals.js";

/** One step of an authentication exchange, as the method (e.g. SCRAM) answers it. */
export type AuthStep =
  | { kind: "continue"; data: Buffer }
  | { kind: "verified"; username: string; data: Buffer }
  | { kind: "refused"; reason: string; detail: string };

/** The server side of one exchange: each client message in, the next step out. */
export interface AuthConversation {
  step(data: Buffer | undefined): Promise<AuthStep>;
  /** The user the client named, once it has. */
  readonly username: string | undefined;
}

/** What an exchange decided, for the authenticate hook (which refuses or admits as usual). */
export interface EnhancedAuthResult {
  method: string;
  /** The user the exchange named; undefined when it never got that far. */
  username: string | undefined;
  verified: boolean;
  /** The method's reason, when it refused. */
  reason: string | undefined;
  /** A connected client proving itself again, not a CONNECT. */
  reauthentication: boolean;
}

const SUCCESS = 0x00;
const CONTINUE_AUTHENTICATION = 0x18;
const REAUTHENTICATE = 0x19;

interface Exchange {
  /** At CONNECT, or a re-authentication of a connected client [MQTT-4.12.1]. */
  kind: "connect" | "reauthentication";
  method: string;
  /** The packet that opened it: the CONNECT, or the client's AUTH 0x19. */
  opening: Packet;
  conversation: AuthConversation;
  finished: boolean;
  /** Each client message waits for the step before it. */
  turn: Promise<void>;
}

/** What a client's packets are watched for. */
interface Watch {
  exchange: Exchange | undefined;
  /** After an enhanced CONNECT: the method and user a re-authentication must repeat. */
  authenticated: { method: string; username: string } | undefined;
  /** Hands a packet to aedes as if just parsed. */
  forward(packet: Packet): void;
  /** Packets parsed from now on go straight to aedes. */
  release(): void;
}

/**
 * MQTT 5 enhanced authentication (§4.12) in front of aedes, which has none: a CONNECT naming a
 * method Sluice offers is held back while the client and the method exchange AUTH packets, and
 * is then handed to aedes without its Authentication Method and Data, as the user the method
 * named, with the outcome recorded for the authenticate hook (which admits or refuses it like
 * any CONNECT: lockout, audit, identity binding). The successful CONNACK carries the method and
 * its last message [MQTT-4.12.0-5]. aedes' connect timeout bounds the whole exchange: it runs
 * until aedes sees the CONNECT. A CONNECT naming another method reaches aedes as it came, which
 * refuses it (0x8C). A client so authenticated may re-authenticate while connected, as the same
 * user; failing that, it is disconnected with 0x87.
 */
export class EnhancedAuth {
  constructor(
    private readonly methods: ReadonlyMap<string, () => AuthConversation>,
    private readonly decided: (client: Client, result: EnhancedAuthResult) => void,
  ) {}

  /** Watches a new client's first packet; a client that does not use AUTH costs nothing after. */
  install(client: Client): void {
    const watch: Watch = {
      exchange: undefined,
      authenticated: undefined,
      forward: () => {},
      release: () => {},
    };
    const interception = interceptPackets(client, (packet) => this.take(client, watch, packet));
    watch.forward = interception.forward;
    watch.release = interception.release;
  }

  /** Whether the packet is the exchange's (true) or aedes' (false). */
  private take(client: Client, watch: Watch, packet: Packet): boolean {
    const current = watch.exchange;
    if (current !== undefined && !current.finished) {
      // At CONNECT everything is the exchange's; while connected, only AUTH is.
      if (current.kind === "reauthentication" && packet.cmd !== "auth") return false;
      current.turn = current.turn.then(() => this.next(client, watch, current, packet));
      return true;
    }
    if (watch.authenticated !== undefined) {
      if (packet.cmd !== "auth") return false;
      const { method } = watch.authenticated;
      if (
        packet.reasonCode !== REAUTHENTICATE ||
        packet.properties?.authenticationMethod !== method
      ) {
        // [MQTT-4.12.1-1]: the same method as at CONNECT, opened with 0x19.
        void closeWithWill(client, { reasonCode: ReasonCode.ProtocolError });
        return true;
      }
      this.open(client, watch, "reauthentication", method, packet);
      return true;
    }
    const method = packet.cmd === "connect" ? methodOf(packet) : undefined;
    if (method === undefined || !this.methods.has(method)) {
      watch.release();
      return false;
    }
    this.open(client, watch, "connect", method, packet);
    return true;
  }

  private open(
    client: Client,
    watch: Watch,
    kind: Exchange["kind"],
    method: string,
    opening: Packet,
  ): void {
    const start = this.methods.get(method) as () => AuthConversation;
    const exchange: Exchange = {
      kind,
      method,
      opening,
      conversation: start(),
      finished: false,
      turn: Promise.resolve(),
    };
    watch.exchange = exchange;
    exchange.turn = this.next(client, watch, exchange, opening);
  }

  private async next(
    client: Client,
    watch: Watch,
    exchange: Exchange,
    packet: Packet,
  ): Promise<void> {
    if (exchange.finished) return;
    const data = messageOf(exchange, packet);
    if (data === false) {
      // Before the CONNACK only AUTH may come [MQTT-3.1.2-30] (or DISCONNECT, which ends it).
      exchange.finished = true;
      if (exchange.kind === "connect") client.conn.destroy();
      else void closeWithWill(client, { reasonCode: ReasonCode.ProtocolError });
      return;
    }
    let step: AuthStep;
    try {
      step = await exchange.conversation.step(data);
    } catch {
      step = { kind: "refused", reason: "error", detail: "the authentication method failed" };
    }
    if (client.conn.destroyed) {
      exchange.finished = true;
      return;
    }
    if (step.kind === "continue") {
      client.conn.write(authPacket(CONTINUE_AUTHENTICATION, exchange.method, step.data));
      return;
    }
    exchange.finished = true;
    const result: EnhancedAuthResult =
      step.kind === "verified"
        ? {
            method: exchange.method,
            username: step.username,
            verified: true,
            reason: undefined,
            reauthentication: exchange.kind === "reauthentication",
          }
        : {
            method: exchange.method,
            username: exchange.conversation.username,
            verified: false,
            reason: step.reason,
            reauthentication: exchange.kind === "reauthentication",
          };
    if (exchange.kind === "reauthentication") {
      this.reauthenticated(client, watch, result, step.kind === "verified" ? step.data : undefined);
      return;
    }
    this.decided(client, result);
    if (step.kind === "verified") {
      setConnackAuthentication(client, {
        authenticationMethod: exchange.method,
        authenticationData: step.data,
      });
      watch.authenticated = { method: exchange.method, username: step.username };
    } else {
      // Packets the client sends after its CONNACK (parsed from now on) are aedes' again.
      watch.release();
    }
    watch.forward(asPlainConnect(exchange.opening as IConnectPacket, result.username));
  }

  private reauthenticated(
    client: Client,
    watch: Watch,
    result: EnhancedAuthResult,
    serverFinal: Buffer | undefined,
  ): void {
    // A re-authentication proves the same user again; it never changes who the client is.
    const same = result.verified && result.username === watch.authenticated?.username;
    const outcome = same
      ? result
      : { ...result, verified: false, reason: result.reason ?? "other_user" };
    this.decided(client, outcome);
    if (same && serverFinal !== undefined) {
      client.conn.write(authPacket(SUCCESS, result.method, serverFinal));
      return;
    }
    void closeWithWill(client, { reasonCode: ReasonCode.NotAuthorized });
  }
}

function methodOf(packet: Packet): string | undefined {
  const connect = packet as IConnectPacket;
  return connect.protocolVersion === 5 ? connect.properties?.authenticationMethod : undefined;
}

/** The client's message in a packet of the exchange; false for a packet that breaks it. */
function messageOf(exchange: Exchange, packet: Packet): Buffer | undefined | false {
  if (packet === exchange.opening) {
    return (packet as IConnectPacket | IAuthPacket).properties?.authenticationData;
  }
  if (
    packet.cmd === "auth" &&
    packet.reasonCode === CONTINUE_AUTHENTICATION &&
    packet.properties?.authenticationMethod === exchange.method
  ) {
    return packet.properties.authenticationData;
  }
  return false;
}

function authPacket(reasonCode: number, method: string, data: Buffer): Buffer {
  const packet: IAuthPacket = {
    cmd: "auth",
    reasonCode,
    properties: { authenticationMethod: method, authenticationData: data },
  };
  return mqttPacket.generate(packet, { protocolVersion: 5 });
}

/** The CONNECT aedes gets: as the user the method named, with no password or method of its own. */
function asPlainConnect(connect: IConnectPacket, username: string | undefined): IConnectPacket {
  const {
    authenticationMethod: _method,
    authenticationData: _data,
    ...rest
  } = connect.properties ?? {};
  const plain: IConnectPacket = { ...connect, properties: rest };
  if (username === undefined) delete plain.username;
  else plain.username = username;
  delete plain.password;
  return plain;
}
