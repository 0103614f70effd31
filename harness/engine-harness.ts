import { once } from "node:events";
import {
  type AddressInfo,
  createServer,
  connect as netConnect,
  type Server,
  type Socket,
} from "node:net";
import type { Duplex } from "node:stream";
import type { Aedes, Client } from "aedes";
import { pino } from "pino";
import type { Backend } from "../src/backend/backend.js";
import { createBackend } from "../src/backend/create-backend.js";
import { resolveConfig } from "../src/config/load-config.js";
import { HEARTBEAT_MS_DEFAULT, type SluiceConfig } from "../src/config/schema.js";
import { BrokerSlot } from "../src/engine/broker-slot.js";
import { DeparturePacer } from "../src/engine/departure-pacer.js";
import { PacketGuard } from "../src/engine/packet-guard.js";
import { SubscribePacer } from "../src/engine/subscribe-pacer.js";
import { ClientContexts } from "../src/mqtt/client-context.js";
import { buildAdmission } from "../src/node/build-admission.js";
import { buildAuthentication } from "../src/node/build-authentication.js";
import { buildBroker } from "../src/node/build-broker.js";
import { ConnectionIntake } from "../src/node/connection-intake.js";
import { SluiceMetrics } from "../src/observability/metrics.js";
import { SocketByteMeter } from "../src/observability/socket-byte-meter.js";
import { AuditLog } from "../src/security/audit-log.js";
import { SecurityFiles } from "../src/security/security-files.js";
import { coalesceWrites } from "../src/transport/write-coalescing.js";
import { duplexPair } from "./duplex-pair.js";
import { connectPacket } from "./raw-socket.js";
import { WireClient } from "./wire-client.js";

export interface EngineOptions {
  /** `limits` as a config file holds them. */
  limits?: Record<string, unknown>;
  /** Replaces the backend's store (persistence and emitter) before the broker is built on it. */
  store?(store: Backend["store"]): Backend["store"];
}

/** A connection the test drives, and the aedes client the broker made of it. */
export interface EngineConnection {
  wire: WireClient;
  client: Client;
  /** The broker's end of the connection. */
  stream: Duplex;
}

/**
 * A node's MQTT engine in this process, with no listener: the broker built by the node's own
 * buildBroker on the in-memory backend, and connections handed over by the node's own
 * ConnectionIntake (client context, packet guard), as a listener hands them over. Connections
 * are in-process stream pairs; `connectOverLoopback` gives a real TCP socket, for what only a
 * kernel's socket buffer shows.
 */
export class Engine {
  private readonly connections: EngineConnection[] = [];
  private server: Server | undefined;

  private constructor(
    readonly config: SluiceConfig,
    readonly broker: Aedes,
    readonly metrics: SluiceMetrics,
    /** Removes departed clients' subscriptions, paced. */
    readonly departures: DeparturePacer,
    /** Queue drops reported to the node (`onQueueFull`), in order. */
    readonly queueDrops: ReadonlyArray<{ clientId: string; count: number }>,
    private readonly intake: ConnectionIntake,
    private readonly contexts: ClientContexts,
    private readonly closeParts: () => Promise<void>,
  ) {}

  static async start(options: EngineOptions = {}): Promise<Engine> {
    const { config } = resolveConfig(
      {
        listeners: [{ type: "tcp", host: "127.0.0.1", port: 0 }],
        auth: { allowAnonymous: true },
        limits: {
          // This process' own work (and a busy machine) must not read as the node's overload.
          overload: { eventLoopDelayMs: 60_000, heapUsedRatio: 1 },
          ...options.limits,
        },
      },
      { configDir: process.cwd(), env: {} },
    );
    const log = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
    const slot = new BrokerSlot();
    const departures = new DeparturePacer();
    const metrics = new SluiceMetrics(config.nodeId, ["tcp"], {
      subscriptionCount: () => slot.subscriptionCount(),
      retainedCount: async () => 0,
      takeSocketBytes: () => ({ received: 0, sent: 0 }),
      clusterNodes: () => 1,
    });
    const drops: Array<{ clientId: string; count: number }> = [];
    const onQueueFull = (clientId: string, count: number): void => {
      drops.push({ clientId, count });
    };
    const built = await createBackend(config, {
      log,
      metrics,
      queue: { maxQueuedPerClient: config.limits.queue.maxQueuedPerClient, onQueueFull },
    });
    const backend = options.store ? { ...built, store: options.store(built.store) } : built;
    const security = await SecurityFiles.load({ passwordFile: undefined, aclFile: undefined }, log);
    const audit = new AuditLog(log);
    const { admission, overload } = buildAdmission(config, backend, log);
    const contexts = new ClientContexts();
    const { authenticator } = buildAuthentication({
      config,
      backend,
      security,
      slot,
      metrics,
      audit,
      contexts,
    });
    const subscribePacer = new SubscribePacer();
    const broker = await buildBroker({
      config,
      heartbeatMs: HEARTBEAT_MS_DEFAULT,
      backend,
      authenticator,
      security,
      admission,
      contexts,
      onQueueFull,
      subscribePacer,
      departurePacer: departures,
      slot,
      metrics,
      audit,
      log,
    });
    const intake = new ConnectionIntake({
      broker,
      quotas: backend.quotas,
      contexts,
      metrics,
      byteMeter: new SocketByteMeter(),
      packetGuard: new PacketGuard(config.limits),
      publishLimits: undefined,
      backpressure: undefined,
      admission,
      subscribePacer,
      ownership: undefined,
      devices: undefined,
      accepting: () => true,
      connectTimeoutMs: config.limits.connectTimeoutMs,
      answerRefusals: config.limits.connections.answerRefusals,
      log,
    });
    const closeParts = async (): Promise<void> => {
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      overload.close();
      await backend.close();
    };
    return new Engine(config, broker, metrics, departures, drops, intake, contexts, closeParts);
  }

  /** A connection over an in-process stream pair, CONNECTed and CONNACKed. */
  async connect(clientId: string, options: { clean?: boolean } = {}): Promise<EngineConnection> {
    const connection = this.open();
    connection.wire.send(connectPacket(clientId, options));
    await connection.wire.waitFor("CONNACK", (packet) => packet.cmd === "connack");
    return connection;
  }

  /**
   * A connection over an in-process stream pair, handed to the broker; nothing sent yet. Its
   * wire parses what the broker sends as `protocolVersion` (5: an MQTT 5 CONNECT is to come).
   */
  open(protocolVersion: 4 | 5 = 4): EngineConnection {
    const { server, client } = duplexPair();
    return this.handOver(
      server,
      server as unknown as Socket,
      new WireClient(client, protocolVersion),
    );
  }

  /** A connection over a real loopback TCP socket, wired as the TCP listener wires one. */
  async connectOverLoopback(clientId: string): Promise<EngineConnection & { peer: Socket }> {
    if (this.server === undefined) {
      this.server = createServer({ noDelay: true });
      this.server.listen(0, "127.0.0.1");
      await once(this.server, "listening");
    }
    const accepted = once(this.server, "connection").then(([socket]) => socket as Socket);
    const peer = netConnect((this.server.address() as AddressInfo).port, "127.0.0.1");
    const [socket] = await Promise.all([accepted, once(peer, "connect")]);
    coalesceWrites(socket);
    const connection = this.handOver(socket, socket, new WireClient(peer));
    connection.wire.send(connectPacket(clientId));
    await connection.wire.waitFor("CONNACK", (packet) => packet.cmd === "connack");
    return { ...connection, peer };
  }

  /** Every sluice_dropped_messages_total count of a reason so far. */
  async droppedMessages(reason: string): Promise<number> {
    const metric = this.metrics.registry.getSingleMetric("sluice_dropped_messages_total");
    const values = (await metric?.get())?.values ?? [];
    return values.find((v) => v.labels.reason === reason)?.value ?? 0;
  }

  async close(): Promise<void> {
    for (const { wire } of this.connections) wire.stream.destroy();
    await this.closeParts();
    if (this.server) await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }

  private handOver(stream: Duplex, socket: Socket, wire: WireClient): EngineConnection {
    this.intake.admit(socket, "127.0.0.1", "tcp");
    this.intake.accept({
      stream,
      socket,
      listener: "tcp",
      remoteAddress: "127.0.0.1",
      remotePort: 0,
    });
    const client = this.contexts.ofSocket(socket)?.client;
    if (client === undefined) throw new Error("the intake did not hand the connection to aedes");
    const connection = { wire, client, stream };
    this.connections.push(connection);
    return connection;
  }
}
