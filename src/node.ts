import { readFileSync } from "node:fs";
import type { AddressInfo, Socket } from "node:net";
import { Aedes, type Client } from "aedes";
import { type AdminApiDeps, adminRoutes } from "./admin/admin-api.js";
import { AdminServer } from "./admin/admin-server.js";
import {
  ClusterConnectionCounts,
  LocalUsernameQuota,
  type UsernameQuota,
} from "./admission/cluster-connection-counts.js";
import { ConnectAdmission } from "./admission/connect-admission.js";
import { ConnectionQuotas } from "./admission/connection-quotas.js";
import { FlappingGuard } from "./admission/flapping-guard.js";
import { OverloadMonitor } from "./admission/overload-monitor.js";
import { ClientOwnership, takeoverTopic } from "./cluster/client-ownership.js";
import { NODE_LEASE_KEY_PREFIX, NodeRegistry } from "./cluster/node-registry.js";
import { RedisFabric } from "./cluster/redis-fabric.js";
import {
  ClusterSessionDirectory,
  DISCONNECT_TOPIC,
  LocalSessionDirectory,
} from "./cluster/session-directory.js";
import { MemorySessionRegistry, RedisSessionRegistry } from "./cluster/session-registry.js";
import { WillClaims } from "./cluster/will-claims.js";
import { visitFiles } from "./config/file-keys.js";
import {
  DEVICE_CERTIFICATE_DAYS_DEFAULT,
  FILE_KEYS,
  HEARTBEAT_MS_DEFAULT,
  isTlsListener,
  type ListenerConfig,
  type SluiceConfig,
} from "./config/schema.js";
import { verifyEngine } from "./engine/engine-check.js";
import { MemoryPersistence } from "./engine/memory-persistence.js";
import { asError, ConfigError, PublishDeniedError, problemsOf } from "./errors.js";
import { HttpServer } from "./http/http-server.js";
import { drainClients } from "./lifecycle/drain-clients.js";
import { FileWatcher } from "./lifecycle/file-watcher.js";
import { runPhases } from "./lifecycle/run-phases.js";
import { PublishLimiter } from "./limits/publish-limiter.js";
import { QueueDropReporter } from "./limits/queue-drop-reporter.js";
import { SubscribePacer } from "./limits/subscribe-pacer.js";
import {
  closeWithoutWill,
  closeWithWill,
  countLiveSubscriptions,
  countRetained,
  hasSubscriptions,
  liveBrokerCount,
  type PatchedAedesOptions,
  registeredClient,
  registeredClients,
} from "./mqtt/aedes-internals.js";
import { auditSubject, createBrokerRules } from "./mqtt/broker-rules.js";
import { ClientContexts } from "./mqtt/client-context.js";
import { adaptHooks } from "./mqtt/hook-adapter.js";
import { InflightWindows } from "./mqtt/inflight-window.js";
import { PacketGuard, PacketViolationError } from "./mqtt/packet-guard.js";
import type { Logger } from "./observability/logger.js";
import { SluiceMetrics } from "./observability/metrics.js";
import { SocketByteMeter } from "./observability/socket-byte-meter.js";
import type { DeviceCertificateAuthority } from "./registry/device-certificate-authority.js";
import { DeviceEnforcement } from "./registry/device-enforcement.js";
import { DeviceRegistry, REGISTRY_TOPIC } from "./registry/device-registry.js";
import type { DeviceStore } from "./registry/device-store.js";
import { FileDeviceStore } from "./registry/file-device-store.js";
import { loadDeviceCa } from "./registry/load-device-ca.js";
import { RedisDeviceStore } from "./registry/redis-device-store.js";
import { refreshCrl } from "./registry/revocation.js";
import { AuditLog } from "./security/audit-log.js";
import { AuthLockout } from "./security/auth-lockout.js";
import { SluiceAuthenticator } from "./security/authenticator.js";
import { crlSignedAt, readRevokedSerials } from "./security/crl.js";
import { SecurityFiles } from "./security/security-files.js";
import { createListener } from "./transport/create-listener.js";
import { type ClientConnection, type Listener, rawSocket } from "./transport/listener.js";

/**
 * A node waits for Redis at start as long as it takes, probes up and not ready; past this it
 * says so in the log.
 */
const REDIS_FIRST_WAIT_MS = 2_000;

export type NodeState = "starting" | "ready" | "draining" | "stopped";

export interface NodeAddresses {
  listeners: Array<{ type: ListenerConfig["type"]; address: AddressInfo }>;
  http: AddressInfo;
  /** The admin API, when `admin` is configured. */
  admin?: AddressInfo;
}

/**
 * One Sluice broker node: the composition root that builds the engine, listeners, probes and
 * metrics from a config, and runs the node's life from start through drain to stop.
 */
export class SluiceNode {
  private state: NodeState = "starting";
  private readonly contexts = new ClientContexts();
  private readonly byteMeter = new SocketByteMeter();
  /**
   * Admitted sockets not yet handed to aedes, with the address their quota counts against; a
   * handed-over connection's context keeps it instead, so idle connections hold no entry here.
   */
  private readonly awaitingHandOver = new Map<Socket, string>();
  /** The 'close' listener of every admitted socket, which it is called on. */
  private readonly onAdmittedSocketClose = listenerOfEmitter((socket: Socket) =>
    this.socketClosed(socket),
  );
  private readonly packetGuard: PacketGuard;
  private readonly metrics: SluiceMetrics;
  private readonly log: Logger;
  private readonly rootLogger: Logger;
  private broker: Aedes | undefined;
  private listeners: Listener[] = [];
  private http: HttpServer | undefined;
  private security: SecurityFiles | undefined;
  private audit: AuditLog | undefined;
  private watcher: FileWatcher | undefined;
  private fabric: RedisFabric | undefined;
  private registry: NodeRegistry | undefined;
  private ownership: ClientOwnership | undefined;
  private readonly quotas: ConnectionQuotas;
  private connectionCounts: ClusterConnectionCounts | undefined;
  private overload: OverloadMonitor | undefined;
  private admission: ConnectAdmission | undefined;
  private publishLimits: PublishLimiter | undefined;
  private devices: DeviceRegistry | undefined;
  private enforcement: DeviceEnforcement<Client> | undefined;
  private adminServer: AdminServer | undefined;
  private crlTimer: NodeJS.Timeout | undefined;
  /** The device CA's CRL from the registry, for listeners with `registryCrl`. */
  private registryCrl: string | undefined;
  private readonly queueDrops: QueueDropReporter;
  private readonly windows: InflightWindows;
  private readonly subscribePacer = new SubscribePacer();
  private boundAddresses: NodeAddresses | undefined;
  private shutdownPromise: Promise<void> | undefined;
  private readonly heartbeatMs: number;

  private constructor(
    readonly config: SluiceConfig,
    logger: Logger,
  ) {
    this.rootLogger = logger;
    // How often a node announces itself (aedes declares a node dead after 3 silent heartbeats and
    // looks for dead nodes' wills every 4); alone, it only paces aedes' own timers.
    this.heartbeatMs = config.redis?.heartbeatMs ?? HEARTBEAT_MS_DEFAULT;
    this.quotas = new ConnectionQuotas(
      config.limits.connections,
      () => this.connectionCounts?.otherNodesOpen() ?? 0,
    );
    this.log = logger.child({ module: "node" });
    this.metrics = new SluiceMetrics(
      config.nodeId,
      config.listeners.map((l) => l.type),
      {
        subscriptionCount: () => (this.broker ? countLiveSubscriptions(this.broker) : 0),
        // In memory the store is walked per scrape: fine at the scale an in-memory node serves.
        retainedCount: () => {
          if (this.fabric) return this.fabric.retainedCount();
          return this.broker ? countRetained(this.broker) : Promise.resolve(0);
        },
        takeSocketBytes: () => this.byteMeter.take(),
        clusterNodes: () => (this.broker ? liveBrokerCount(this.broker, this.heartbeatMs) : 1),
      },
      { redis: config.redis !== undefined },
    );
    const { maxInflight, maxQueuedPerClient } = config.limits.queue;
    this.queueDrops = new QueueDropReporter(
      this.metrics,
      logger.child({ module: "limits" }),
      maxQueuedPerClient,
    );
    this.packetGuard = new PacketGuard({
      maxPacketBytes: config.limits.maxPacketBytes,
      maxTopicBytes: config.limits.maxTopicBytes,
    });
    this.windows = new InflightWindows(
      { maxInflight, maxQueued: maxQueuedPerClient },
      { onDropped: (client, count) => this.queueDrops.dropped(client.id, count) },
    );
  }

  /** The cap on each session's stored queue, for whichever persistence the node uses. */
  private storedQueueLimits() {
    return {
      maxQueuedPerClient: this.config.limits.queue.maxQueuedPerClient,
      onQueueFull: (clientId: string, dropped: number) =>
        this.queueDrops.dropped(clientId, dropped),
    };
  }

  /** Builds and starts a node; on failure everything already opened is closed again. */
  static async start(config: SluiceConfig, logger: Logger): Promise<SluiceNode> {
    const node = new SluiceNode(config, logger);
    try {
      await node.open();
    } catch (error) {
      await node.close();
      throw error;
    }
    return node;
  }

  get status(): NodeState {
    return this.state;
  }

  /** Where the node actually listens (ports resolved when the config asked for port 0). */
  get addresses(): NodeAddresses {
    if (!this.boundAddresses) throw new Error("node is not started");
    return this.boundAddresses;
  }

  private async open(): Promise<void> {
    const { config } = this;
    // An engine without Sluice's fixes would run, silently without them: refuse instead.
    verifyEngine();
    // Files first: a broken password file or ACL fails the start at once, not after Redis.
    const security = await SecurityFiles.load(
      { passwordFile: config.auth.passwordFile, aclFile: config.acl?.file },
      this.rootLogger.child({ module: "security" }),
    );
    this.security = security;
    // Probes next: while the node waits for Redis, /healthz answers and /readyz says 503.
    this.http = new HttpServer(
      config.http.host,
      config.http.port,
      {
        isReady: () =>
          this.state === "ready" &&
          (this.fabric === undefined || this.fabric.isUp()) &&
          this.overload?.overloaded !== true,
        metrics: async () => ({
          contentType: this.metrics.contentType,
          body: await this.metrics.render(),
        }),
      },
      this.rootLogger.child({ module: "http" }),
    );
    const httpAddress = await this.http.listen();
    this.log.info(
      { event: "http.started", host: httpAddress.address, port: httpAddress.port },
      `HTTP probes and metrics on ${httpAddress.address}:${httpAddress.port}`,
    );
    if (config.redis) {
      const fabric = new RedisFabric(
        config.redis,
        this.rootLogger.child({ module: "redis" }),
        {
          onStateChange: (up) => {
            this.metrics.setRedisUp(up);
            if (up) this.reconcileOwnership();
          },
          onSubscriberRestored: () => this.recoverPubSubGap(),
        },
        this.storedQueueLimits(),
      );
      this.fabric = fabric;
      if (!(await fabric.waitUntilReady(REDIS_FIRST_WAIT_MS))) {
        this.log.warn(
          { event: "redis.waiting" },
          "waiting for Redis before taking clients (not ready until then)",
        );
        await fabric.waitUntilReady();
      }
      this.registry = new NodeRegistry(
        fabric.state,
        config.nodeId,
        config.redis.nodeLeaseSeconds * 1000,
        this.rootLogger.child({ module: "cluster" }),
      );
      await this.registry.claim();
    }
    const mqttLog = this.rootLogger.child({ module: "mqtt" });
    const audit = new AuditLog(this.rootLogger);
    this.audit = audit;
    this.admission = this.buildAdmission();
    const deviceStore: DeviceStore | undefined = this.fabric
      ? new RedisDeviceStore(this.fabric.state)
      : config.registry
        ? await FileDeviceStore.open(config.registry.file)
        : undefined;
    if (deviceStore) {
      this.devices = new DeviceRegistry(deviceStore, {
        publish: (change) => this.broadcast(REGISTRY_TOPIC, Buffer.from(JSON.stringify(change))),
      });
    }
    const lockout = this.fabric
      ? AuthLockout.inRedis(config.limits.authFailures, this.fabric.state)
      : AuthLockout.inMemory(config.limits.authFailures);
    const authenticator = new SluiceAuthenticator(
      {
        allowAnonymous: config.auth.allowAnonymous,
        certificateIdentity: config.auth.certificateIdentity,
        clientIdPattern: config.auth.clientIdPattern,
        passwords: () => security.passwords(),
        devices: this.devices,
      },
      {
        lockout,
        audit,
        onFailure: (reason) => this.metrics.markAuthFailure(reason),
        onUsernameTargeted: () => this.metrics.markUsernameTargeted(),
      },
    );
    if (config.limits.publish) {
      this.publishLimits = new PublishLimiter(config.limits.publish, {
        metrics: this.metrics,
        audit,
        log: this.rootLogger.child({ module: "limits" }),
        ...(this.fabric ? { redis: this.fabric.state } : {}),
      });
    }
    const sessions = this.fabric
      ? new RedisSessionRegistry(this.fabric.state, config.nodeId, NODE_LEASE_KEY_PREFIX)
      : new MemorySessionRegistry();
    if (sessions instanceof RedisSessionRegistry) {
      this.ownership = new ClientOwnership(
        sessions,
        {
          publish: (topic, payload) => this.broadcast(topic, payload),
          isRegistered: (client) =>
            this.broker !== undefined && registeredClient(this.broker, client.id) === client,
          close: (client) => void closeWithWill(client),
        },
        this.rootLogger.child({ module: "cluster" }),
      );
    }
    const rules = createBrokerRules({
      contexts: this.contexts,
      authenticator,
      authorizer: () => security.authorizer(),
      liveIdentity: (clientId) => {
        const live = this.broker ? registeredClient(this.broker, clientId) : undefined;
        return live ? this.contexts.get(live)?.identity : undefined;
      },
      metrics: this.metrics,
      sessions,
      ...(this.ownership ? { ownership: this.ownership } : {}),
      ...(this.fabric ? { willClaims: new WillClaims(this.fabric.state) } : {}),
      audit,
      ...(this.admission ? { admission: this.admission } : {}),
      maxBufferedBytes: config.limits.queue.maxBufferedBytes,
      maxTopicBytes: config.limits.maxTopicBytes,
      maxKeepaliveSeconds: config.limits.maxKeepaliveSeconds,
      maxSubscriptionsPerClient: config.limits.subscriptions.perClient,
      events: {
        onWillPublished: (clientId) =>
          mqttLog.debug({ event: "client.will_published", clientId }, "will published"),
      },
    });
    const hooks = adaptHooks(
      {
        ...rules,
        authorizeSubscribe: this.subscribePacer.observeSubscribe(
          this.windows.observeSubscribe(rules.authorizeSubscribe),
        ),
      },
      {
        onUnexpectedError: (hook, error) =>
          this.log.error(
            { event: "hook.failed", hook, err: error },
            "broker hook failed unexpectedly",
          ),
      },
    );
    const options: PatchedAedesOptions = {
      id: config.nodeId,
      // Without Redis, aedes keeps sessions, retained messages and wills in memory.
      ...(this.fabric
        ? { mq: this.fabric.mq, persistence: this.fabric.persistence }
        : { persistence: new MemoryPersistence(this.storedQueueLimits()) }),
      heartbeatInterval: this.heartbeatMs,
      connectTimeout: config.limits.connectTimeoutMs,
      // A client whose socket takes no data for this long is closed (a persistent session
      // keeps its stored queue): a socket that takes nothing holds node memory for nothing.
      drainTimeout: config.limits.queue.drainTimeoutMs,
      maxTopicLevels: config.limits.subscriptions.maxTopicLevels,
      ...hooks,
      authorizeForward: this.windows.observeForward(rules.authorizeForward),
      sessionPresent: (client) => this.contexts.get(client)?.sessionPresent === true,
      // Cluster takeover is ClientOwnership's, fenced by epochs; aedes' gossip is not.
      closeOnPeerConnect: this.ownership === undefined,
    };
    const broker = await Aedes.createBroker(options);
    this.broker = broker;
    this.observeBroker(broker, mqttLog);
    if (this.ownership) await this.listenForTakeovers(broker, this.ownership);
    await this.listenForAdminSignals(broker, sessions);

    if (
      !config.auth.allowAnonymous &&
      config.auth.passwordFile === undefined &&
      config.auth.certificateIdentity === "none"
    ) {
      this.log.warn(
        { event: "auth.nothing_configured" },
        "anonymous access is off and no authentication method is configured: every client will be refused",
      );
    }

    const settings = {
      maxPacketBytes: config.limits.maxPacketBytes,
      connectTimeoutMs: config.limits.connectTimeoutMs,
      registryCrl: () => this.registryCrl,
    };
    const listenerLog = this.rootLogger.child({ module: "transport" });
    this.listeners = config.listeners.map((listenerConfig, index) =>
      createListener(
        listenerConfig,
        index,
        {
          admitSocket: (socket, origin) => this.admitSocket(socket, origin.remoteAddress),
          onConnection: (connection) => this.accept(broker, connection),
          onRejected: (reason, error) => {
            this.metrics.markConnectionRejected(reason);
            listenerLog.debug(
              { event: "connection.rejected", reason, err: error?.message },
              "connection refused",
            );
          },
        },
        settings,
      ),
    );

    const listenerAddresses: NodeAddresses["listeners"] = [];
    for (const listener of this.listeners) {
      const address = await listener.listen();
      listenerAddresses.push({ type: listener.config.type, address });
      listenerLog.info(
        {
          event: "listener.started",
          type: listener.config.type,
          host: address.address,
          port: address.port,
        },
        `${listener.config.type} listener on ${address.address}:${address.port}`,
      );
    }

    const adminAddress = await this.startAdmin(sessions);
    this.boundAddresses = {
      listeners: listenerAddresses,
      http: httpAddress,
      ...(adminAddress === undefined ? {} : { admin: adminAddress }),
    };
    this.watcher = new FileWatcher(watchedFiles(config), () => {
      this.log.info(
        { event: "reload.started", trigger: "file change" },
        "security files changed: reloading",
      );
      this.reload().catch((error: unknown) =>
        this.log.error({ event: "reload.failed", err: error }, "reload failed"),
      );
    });
    this.state = "ready";
    this.log.info({ event: "node.ready", nodeId: config.nodeId }, "node ready");
  }

  /**
   * The connection quotas of `limits.connections` and the overload, flapping and per-username
   * checks on CONNECT; connection counts go to Redis in a cluster.
   */
  private buildAdmission(): ConnectAdmission {
    const { config } = this;
    const { connections, flapping, overload } = config.limits;
    this.overload = new OverloadMonitor(overload, this.rootLogger.child({ module: "admission" }));
    let usernames: UsernameQuota | undefined;
    if (this.fabric && config.redis) {
      this.connectionCounts = new ClusterConnectionCounts(
        this.fabric.state,
        config.nodeId,
        config.redis.nodeLeaseSeconds * 1000,
        connections.perUsername,
        () => this.quotas.openConnections,
        this.rootLogger.child({ module: "admission" }),
      );
      this.connectionCounts.start();
      usernames = this.connectionCounts;
    } else if (connections.perUsername !== undefined) {
      usernames = new LocalUsernameQuota(connections.perUsername);
    }
    const monitor = this.overload;
    return new ConnectAdmission({
      isOverloaded: () => monitor.overloaded,
      flapping:
        flapping === undefined
          ? undefined
          : this.fabric
            ? FlappingGuard.inRedis(flapping, this.fabric.state)
            : FlappingGuard.inMemory(flapping),
      usernames,
    });
  }

  /**
   * Socket quotas, once per socket, before a byte of MQTT or of a TLS handshake is read: a
   * refused socket is closed at once. An admitted one is counted until its TCP socket closes.
   */
  private admitSocket(socket: Socket, ip: string): boolean {
    if (this.state !== "ready" || socket.destroyed) {
      socket.destroy();
      return false;
    }
    const rejection = this.quotas.admit(ip);
    if (rejection !== undefined) {
      socket.destroy();
      this.metrics.markConnectionRejected(rejection);
      return false;
    }
    // Everything a connection's end releases, in this one listener, shared by every socket: a
    // socket admitted but never handed over (a failed TLS handshake) must give its quota back
    // too, and each listener of its own cost an idle connection its closure and context. `on`,
    // not `once`: a socket emits 'close' once, and once() allocates a wrapper per connection.
    this.awaitingHandOver.set(socket, ip);
    socket.on("close", this.onAdmittedSocketClose);
    return true;
  }

  /** An admitted socket closed: its quota, and what its connection held if it was handed over. */
  private socketClosed(socket: Socket): void {
    const context = this.contexts.ofSocket(socket);
    if (context === undefined) {
      const ip = this.awaitingHandOver.get(socket);
      this.awaitingHandOver.delete(socket);
      if (ip !== undefined) this.quotas.release(ip);
      return;
    }
    const { client } = context;
    if (context.admittedAddress !== undefined) this.quotas.release(context.admittedAddress);
    this.byteMeter.closed(context.socket);
    this.metrics.markConnectionClosed(context.listener);
    if (context.countedUsername !== undefined) this.admission?.release(context.countedUsername);
    this.ownership?.ended(client);
    context.endPublishLimits?.();
  }

  /** A connection the listener admitted (admitSocket) and made ready for MQTT. */
  private accept(broker: Aedes, connection: ClientConnection): void {
    if (this.state !== "ready") {
      connection.stream.destroy();
      return;
    }
    this.handOver(broker, connection);
  }

  /** Gives an admitted connection to aedes, with Sluice's layers. */
  private handOver(broker: Aedes, connection: ClientConnection): void {
    const { listener, socket } = connection;
    this.metrics.markConnectionOpened(listener);
    this.byteMeter.track(socket);

    const admitted = rawSocket(socket);
    const admittedAddress = this.awaitingHandOver.get(admitted);
    this.awaitingHandOver.delete(admitted);
    const client = broker.handle(connection.stream, connection.request);
    const context = this.contexts.attach(client, connection, admittedAddress);
    this.packetGuard.install(client);
    context.endPublishLimits = this.publishLimits?.attach(client, {
      identity: () => context.identity,
      subject: () => auditSubject(context),
      // Closed like a protocol error: the will goes out (the device misbehaved, it was not moved).
      disconnect: () => void closeWithWill(client),
    });
    this.subscribePacer.watch(client);
  }

  /** A QoS 0 message to every node (this one included) over the cluster's pub/sub. */
  private broadcast(topic: string, payload: Buffer): void {
    this.broker?.publish(
      { cmd: "publish", topic, payload, qos: 0, retain: false, dup: false },
      noop,
    );
  }

  /**
   * Registry changes (cache, revocations, CRL) and cluster-wide disconnect requests, from
   * whichever node's admin API made them.
   */
  private async listenForAdminSignals(
    broker: Aedes,
    sessions: MemorySessionRegistry | RedisSessionRegistry,
  ): Promise<void> {
    const devices = this.devices;
    if (devices) {
      const enforcement = new DeviceEnforcement<Client>(
        devices,
        {
          connected: () =>
            registeredClients(broker).map((client) => ({
              client,
              identity: this.contexts.get(client)?.identity,
            })),
          revoke: (client, _identity, reason) => {
            this.audit?.revoked(auditSubject(this.contexts.get(client)), reason);
            void closeWithoutWill(client);
          },
          applyCrl: (pem) => this.applyRegistryCrl(pem),
        },
        this.rootLogger.child({ module: "registry" }),
      );
      this.enforcement = enforcement;
      await subscribeTo(broker, REGISTRY_TOPIC, (payload) => enforcement.changeReceived(payload));
      await enforcement.loadCrl();
    }
    if (sessions instanceof RedisSessionRegistry) {
      await subscribeTo(broker, DISCONNECT_TOPIC, (payload) => {
        const client = registeredClient(broker, payload.toString("utf8"));
        if (client) this.disconnectByAdmin(client);
      });
    }
  }

  /** An admin closed the client: as any server-side close, its will goes out. */
  private disconnectByAdmin(client: Client): void {
    this.log.info(
      { event: "client.disconnected_by_admin", clientId: client.id },
      "disconnected by an admin",
    );
    void closeWithWill(client);
  }

  /** Loads the device CA's CRL into the TLS listeners that take it (`registryCrl: true`). */
  private applyRegistryCrl(pem: string): void {
    if (pem === this.registryCrl) return;
    this.registryCrl = pem;
    this.listeners.forEach((listener, index) => {
      const config = listener.config;
      if (!isTlsListener(config) || !config.registryCrl) return;
      try {
        listener.reloadTls();
        this.log.info(
          { event: "registry.crl_loaded", listener: `listeners[${index}]` },
          "device CRL loaded",
        );
      } catch (error) {
        this.log.error(
          {
            event: "registry.crl_failed",
            listener: `listeners[${index}]`,
            err: asError(error),
            problems: problemsOf(error),
          },
          "device CRL rejected; the previous one stays in force",
        );
      }
    });
  }

  /** The admin API on its own listener, when configured. */
  private async startAdmin(
    sessions: MemorySessionRegistry | RedisSessionRegistry,
  ): Promise<AddressInfo | undefined> {
    const admin = this.config.admin;
    const devices = this.devices;
    const audit = this.audit;
    const broker = this.broker;
    if (!admin || !devices || !audit || !broker) return undefined;
    const directory =
      sessions instanceof RedisSessionRegistry && this.fabric
        ? new ClusterSessionDirectory(
            sessions,
            this.fabric.state,
            NODE_LEASE_KEY_PREFIX,
            (topic, payload) => this.broadcast(topic, payload),
          )
        : new LocalSessionDirectory({
            nodeId: this.config.nodeId,
            connected: () =>
              registeredClients(broker).map((client) => ({
                clientId: client.id,
                connectedAt: this.contexts.get(client)?.connectedAt,
              })),
            disconnect: (clientId) => {
              const client = registeredClient(broker, clientId);
              if (client) this.disconnectByAdmin(client);
              return client !== undefined;
            },
          });
    const ca = await loadDeviceCa(admin.ca).catch((error: unknown) => {
      throw new ConfigError([`admin.ca: ${(error as Error).message}`], { cause: error });
    });
    if (ca) this.keepCrlFresh(devices, ca);
    const deps: AdminApiDeps = {
      registry: devices,
      ca,
      sessions: directory,
      enrollmentTokenSeconds: admin.enrollmentTokenSeconds,
      deviceCertificateDays: admin.ca?.deviceCertificateDays ?? DEVICE_CERTIFICATE_DAYS_DEFAULT,
      passwordUsers: () => this.security?.passwords(),
      audit,
    };
    this.adminServer = new AdminServer(
      {
        host: admin.host,
        port: admin.port,
        tokenDigests: admin.tokens,
        maxBodyBytes: admin.maxBodyBytes,
        tls: admin.tls === undefined ? undefined : readAdminTls(admin.tls),
        maxConnectionsPerIp: admin.maxConnectionsPerIp,
        unauthenticatedRequestsPerMinute: admin.unauthenticatedRequestsPerMinute,
        redis: this.fabric?.state,
      },
      adminRoutes(deps),
      audit,
      this.rootLogger.child({ module: "admin" }),
    );
    const address = await this.adminServer.listen();
    this.log.info(
      { event: "admin.started", host: address.address, port: address.port },
      `admin API on ${address.address}:${address.port}`,
    );
    return address;
  }

  /** Signs the device CRL again every day, at start and then hourly checks, before it expires. */
  private keepCrlFresh(devices: DeviceRegistry, ca: DeviceCertificateAuthority): void {
    const refresh = (): void => {
      refreshCrl(devices, ca, crlSignedAt).then(
        (signed) => {
          if (signed) this.log.info({ event: "registry.crl_refreshed" }, "device CRL signed again");
        },
        (error: unknown) =>
          this.log.error(
            { event: "registry.crl_refresh_failed", err: error },
            "could not sign the device CRL again; retried in an hour",
          ),
      );
    };
    refresh();
    this.crlTimer = setInterval(refresh, 60 * 60 * 1000);
    this.crlTimer.unref();
  }

  /** Subscribes this node to takeovers of its connections by other nodes. */
  private listenForTakeovers(broker: Aedes, ownership: ClientOwnership): Promise<void> {
    return new Promise((resolve, reject) => {
      broker.subscribe(
        takeoverTopic(this.config.nodeId),
        (packet, done) => {
          const { payload } = packet;
          ownership.takeoverReceived(
            Buffer.isBuffer(payload) ? payload : Buffer.from(String(payload)),
          );
          done();
        },
        (error?: Error) => (error ? reject(error) : resolve()),
      );
    });
  }

  /**
   * This node's Redis subscription was down for a while: messages for its clients and other
   * nodes' subscription changes published meanwhile never reached it. Persistent sessions with
   * subscriptions are closed (without their wills) so that they resume from their stored
   * queues, which did receive those messages; the node's view of the cluster's subscriptions is
   * read again. Clean sessions keep their connections: MQTT keeps nothing for them to resume.
   */
  private recoverPubSubGap(): void {
    const broker = this.broker;
    const fabric = this.fabric;
    if (!broker || !fabric || this.state !== "ready") return;
    const sessions = registeredClients(broker).filter(
      (client) => !client.clean && hasSubscriptions(client),
    );
    this.log.warn(
      { event: "pubsub.gap", persistentSessions: sessions.length },
      "Redis subscription was interrupted: moving persistent sessions to their stored queues",
    );
    for (const client of sessions) void closeWithoutWill(client);
    // Registry change messages may have been missed too.
    this.devices?.forgetAll();
    this.enforcement
      ?.loadCrl()
      .catch((error: unknown) =>
        this.log.error({ event: "registry.crl_failed", err: error }, "could not reload the CRL"),
      );
    const started = Date.now();
    fabric.resyncSubscriptions().then(
      (subscriptions) =>
        this.log.info(
          { event: "pubsub.resynced", subscriptions, ms: Date.now() - started },
          "cluster subscriptions read again from Redis",
        ),
      (error: unknown) =>
        this.log.error(
          { event: "pubsub.resync_failed", err: error },
          "could not read the cluster's subscriptions again; retried at the next reconnect",
        ),
    );
  }

  /** After Redis comes back: close connections taken over elsewhere while it was away. */
  private reconcileOwnership(): void {
    this.ownership
      ?.reconcile()
      .catch((error: unknown) =>
        this.log.warn(
          { event: "ownership.reconcile_failed", err: error },
          "could not check client ownership against Redis; retried when Redis is back",
        ),
      );
  }

  private observeBroker(broker: Aedes, log: Logger): void {
    broker.on("client", (client: Client) => {
      this.ownership?.registered(client);
      const context = this.contexts.get(client);
      const identity = context?.identity;
      if (identity?.device !== undefined && identity.username !== undefined) {
        // Best effort, off the CONNECT path: a failed write loses one last-seen time.
        this.devices?.store.touch(identity.username, new Date().toISOString()).catch(noop);
      }
      log.debug(
        {
          event: "client.connected",
          clientId: client.id,
          listener: context?.listener,
          remoteAddress: context?.remoteAddress,
          proxyAddress: context?.proxyAddress,
        },
        "client connected",
      );
    });
    broker.on("clientDisconnect", (client: Client) => {
      log.debug({ event: "client.disconnected", clientId: client.id }, "client disconnected");
    });
    const onClientError = (client: Client, error: Error): void => {
      if (error instanceof PacketViolationError) {
        this.metrics.markProtocolError(error.violation);
        log.info(
          {
            event: "client.protocol_violation",
            violation: error.violation,
            clientId: client.id ?? undefined,
            remoteAddress: this.contexts.get(client)?.remoteAddress,
          },
          error.message,
        );
        return;
      }
      log.debug(
        { event: "client.error", clientId: client.id ?? undefined, err: error },
        "client connection error",
      );
    };
    broker.on("clientError", onClientError);
    broker.on("connectionError", onClientError);
    broker.on("keepaliveTimeout", (client: Client) => {
      log.debug({ event: "client.keepalive_timeout", clientId: client.id }, "keepalive expired");
    });
    // An EventEmitter 'error' without a listener would throw and take the process down.
    (broker as unknown as NodeJS.EventEmitter).on("error", (error: Error) => {
      if (error instanceof PublishDeniedError) {
        // Another survivor claimed a dead node's will first: expected, not an error.
        log.debug({ event: "will.claimed_elsewhere" }, "will published by another node");
        return;
      }
      log.error({ event: "broker.error", err: error }, "broker error");
    });
  }

  /**
   * Reloads what can change without a restart (SIGHUP, or a watched file changing): the
   * password file, the ACL and every TLS listener's certificate, key, CA and CRL. Whatever
   * fails to load keeps its previous version, with an error in the log. Clients whose password
   * entry is gone are disconnected; every client's next decision uses the new ACL.
   */
  async reload(): Promise<void> {
    if (this.state !== "ready") return;
    await this.security?.reload();
    this.listeners.forEach((listener, index) => {
      try {
        listener.reloadTls();
      } catch (error) {
        this.log.error(
          {
            event: "reload.failed",
            listener: `listeners[${index}]`,
            err: asError(error),
            problems: problemsOf(error),
          },
          "TLS material rejected; the previous one stays in force",
        );
      }
    });
    await this.revokeRemovedCredentials();
  }

  /** Disconnects clients whose password entry is gone or whose certificate is now revoked. */
  private async revokeRemovedCredentials(): Promise<void> {
    const broker = this.broker;
    const audit = this.audit;
    if (!broker || !audit) return;
    const passwords = this.security?.passwords();
    const revokedSerials = await this.revokedSerials();
    const revoked: Array<{ client: Client; reason: string }> = [];
    for (const client of registeredClients(broker)) {
      const identity = this.contexts.get(client)?.identity;
      if (
        identity?.method === "password" &&
        identity.device === undefined &&
        !passwords?.has(identity.username ?? "")
      ) {
        revoked.push({ client, reason: "password entry removed" });
      } else if (identity?.certificateSerial && revokedSerials.has(identity.certificateSerial)) {
        revoked.push({ client, reason: "certificate revoked" });
      }
    }
    for (const { client, reason } of revoked)
      audit.revoked(auditSubject(this.contexts.get(client)), reason);
    await Promise.all(revoked.map(({ client }) => closeWithoutWill(client)));
  }

  /** Serials revoked by the CRLs of all TLS listeners; a CRL that fails to parse is skipped. */
  private async revokedSerials(): Promise<Set<string>> {
    const serials = new Set<string>();
    for (const listener of this.config.listeners) {
      if (!isTlsListener(listener) || !listener.crl) continue;
      try {
        for (const serial of await readRevokedSerials(listener.crl)) serials.add(serial);
      } catch (error) {
        this.log.error(
          { event: "reload.failed", file: listener.crl, err: asError(error) },
          "CRL could not be read",
        );
      }
    }
    return serials;
  }

  /**
   * Graceful shutdown, once however often it is called: turn not-ready, stop accepting,
   * disconnect clients spread over `shutdown.drainSeconds`, then close everything.
   */
  shutdown(): Promise<void> {
    this.shutdownPromise ??= this.runShutdown(this.config.shutdown.drainSeconds * 1000);
    return this.shutdownPromise;
  }

  /** Immediate stop: no drain, every client dropped at once. */
  close(): Promise<void> {
    this.shutdownPromise ??= this.runShutdown(0);
    return this.shutdownPromise;
  }

  private async runShutdown(drainMs: number): Promise<void> {
    const broker = this.broker;
    const log = this.log;
    await runPhases(log, [
      {
        name: "not-ready",
        timeoutMs: 1_000,
        run: async () => {
          this.state = "draining";
          this.watcher?.close();
          this.overload?.close();
        },
      },
      {
        name: "stop-accepting",
        timeoutMs: 5_000,
        run: async () => {
          await Promise.all(this.listeners.map((l) => l.stopAccepting()));
        },
      },
      {
        name: "disconnect-clients",
        timeoutMs: drainMs + 5_000,
        run: async () => {
          if (broker) {
            await drainClients(
              broker,
              { drainMs, publishWills: this.config.shutdown.publishWills },
              log,
            );
          }
        },
      },
      {
        name: "close-admin",
        timeoutMs: 2_000,
        run: async () => {
          clearInterval(this.crlTimer);
          await this.adminServer?.close();
        },
      },
      {
        name: "close-broker",
        timeoutMs: 5_000,
        run: () =>
          new Promise<void>((resolve) => (broker ? broker.close(() => resolve()) : resolve())),
      },
      {
        name: "close-redis",
        timeoutMs: 2_000,
        run: async () => {
          this.connectionCounts?.stop();
          await this.registry?.release();
          await this.fabric?.close();
        },
      },
      {
        name: "close-http",
        timeoutMs: 2_000,
        run: async () => {
          await this.http?.close();
        },
      },
    ]);
    this.state = "stopped";
    log.info({ event: "node.stopped" }, "node stopped");
  }
}

function noop(): void {}

/** Subscribes the node itself (not a client) to a cluster signal topic. */
function subscribeTo(
  broker: Aedes,
  topic: string,
  handle: (payload: Buffer) => void,
): Promise<void> {
  return new Promise((resolve, reject) => {
    broker.subscribe(
      topic,
      (packet, done) => {
        const { payload } = packet;
        handle(Buffer.isBuffer(payload) ? payload : Buffer.from(String(payload)));
        done();
      },
      (error?: Error) => (error ? reject(error) : resolve()),
    );
  });
}

function readAdminTls(tls: { cert: string; key: string; ca?: string | undefined }): {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
} {
  try {
    return {
      cert: readFileSync(tls.cert),
      key: readFileSync(tls.key),
      ...(tls.ca === undefined ? {} : { ca: readFileSync(tls.ca) }),
    };
  } catch (error) {
    throw new ConfigError([
      `admin.tls: cannot read ${(error as NodeJS.ErrnoException).path ?? "a file"} (${(error as NodeJS.ErrnoException).code ?? error})`,
    ]);
  }
}

/** The files a reload re-reads: password file, ACL and the listeners' TLS material. */
const RELOADED_FILES = /^(auth\.passwordFile|acl\.file|listeners\[\]\.)/;

function watchedFiles(config: SluiceConfig): string[] {
  const keys = FILE_KEYS.filter((key) => RELOADED_FILES.test(key.pattern));
  return visitFiles(config, keys).map((file) => file.path);
}

/**
 * An event listener that hands `handle` the emitter it was called on: one function for every
 * emitter, instead of a closure (and its context) per emitter.
 */
function listenerOfEmitter<Emitter>(handle: (emitter: Emitter) => void): (this: Emitter) => void {
  return function listener(this: Emitter) {
    handle(this);
  };
}
