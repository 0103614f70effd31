import type { AddressInfo } from "node:net";
import type { AdminServer } from "./admin/admin-server.js";
import type { OverloadMonitor } from "./admission/overload-monitor.js";
import type { Backend } from "./backend/backend.js";
import { createBackend } from "./backend/create-backend.js";
import { HEARTBEAT_MS_DEFAULT, type ListenerConfig, type SluiceConfig } from "./config/schema.js";
import { BrokerSlot } from "./engine/broker-slot.js";
import { DeparturePacer } from "./engine/departure-pacer.js";
import { verifyEngine } from "./engine/engine-check.js";
import { SubscribePacer } from "./engine/subscribe-pacer.js";
import { HttpServer } from "./http/http-server.js";
import type { FileWatcher } from "./lifecycle/file-watcher.js";
import { runPhases } from "./lifecycle/run-phases.js";
import { QueueDropReporter } from "./limits/queue-drop-reporter.js";
import { ClientContexts } from "./mqtt/client-context.js";
import { logBrokerEvents } from "./node/broker-event-log.js";
import { buildAdmission } from "./node/build-admission.js";
import { buildAuthentication } from "./node/build-authentication.js";
import { buildBroker } from "./node/build-broker.js";
import { ClusterSignals } from "./node/cluster-signals.js";
import type { NodeParts } from "./node/node-parts.js";
import { openListeners } from "./node/open-listeners.js";
import { RegistryCrl } from "./node/registry-crl.js";
import { type ReloadDeps, reloadNode, watchForReload } from "./node/reload.js";
import { shutdownPhases } from "./node/shutdown.js";
import { startAdmin } from "./node/start-admin.js";
import type { Logger } from "./observability/logger.js";
import { SluiceMetrics } from "./observability/metrics.js";
import { SocketByteMeter } from "./observability/socket-byte-meter.js";
import { AuditLog } from "./security/audit-log.js";
import { SecurityFiles } from "./security/security-files.js";
import type { Listener } from "./transport/listener.js";

export type NodeState = "starting" | "ready" | "draining" | "stopped";

export interface NodeAddresses {
  listeners: Array<{ type: ListenerConfig["type"]; address: AddressInfo }>;
  http: AddressInfo;
  /** The admin API, when `admin` is configured. */
  admin?: AddressInfo;
}

/**
 * One Sluice broker node: the composition root. It builds the node's parts from its config, in
 * the order they depend on each other, and runs its life from start through drain to stop; the
 * work itself is in the parts.
 */
export class SluiceNode {
  private state: NodeState = "starting";
  private readonly byteMeter = new SocketByteMeter();
  private readonly slot = new BrokerSlot();
  private readonly metrics: SluiceMetrics;
  private readonly log: Logger;
  private readonly heartbeatMs: number;
  private backend: Backend | undefined;
  private http: HttpServer | undefined;
  private overload: OverloadMonitor | undefined;
  private listeners: Listener[] = [];
  private adminServer: AdminServer | undefined;
  private crl: RegistryCrl | undefined;
  private watcher: FileWatcher | undefined;
  private reloadDeps: ReloadDeps | undefined;
  private boundAddresses: NodeAddresses | undefined;
  private shutdownPromise: Promise<void> | undefined;

  private constructor(
    readonly config: SluiceConfig,
    private readonly root: Logger,
  ) {
    this.log = root.child({ module: "node" });
    // How often a node announces itself (aedes declares a node dead after 3 silent heartbeats
    // and looks for dead nodes' wills every 4); alone, it only paces aedes' own timers.
    this.heartbeatMs = config.redis?.heartbeatMs ?? HEARTBEAT_MS_DEFAULT;
    this.metrics = new SluiceMetrics(
      config.nodeId,
      config.listeners.map((l) => l.type),
      {
        subscriptionCount: () => this.slot.subscriptionCount(),
        retainedCount: () => this.backend?.retainedCount() ?? Promise.resolve(0),
        takeSocketBytes: () => this.byteMeter.take(),
        clusterNodes: () => this.slot.liveNodes(this.heartbeatMs),
      },
      { redis: config.redis !== undefined },
    );
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
    const { config, slot } = this;
    const root = this.root;
    const metrics = this.metrics;
    const contexts = new ClientContexts();
    // An engine without Sluice's fixes would run, silently without them: refuse instead.
    verifyEngine();
    // Files first: a broken password file or ACL fails the start at once, not after Redis.
    const security = await SecurityFiles.load(
      { passwordFile: config.auth.passwordFile, aclFile: config.acl?.file },
      root.child({ module: "security" }),
    );
    // Probes next: while the node waits for Redis, /healthz answers and /readyz says 503.
    const http = new HttpServer(
      config.http.host,
      config.http.port,
      {
        isReady: () =>
          this.state === "ready" && this.backend?.isUp() === true && !this.overload?.overloaded,
        metrics: async () => ({ contentType: metrics.contentType, body: await metrics.render() }),
      },
      root.child({ module: "http" }),
      config.http.maxConnectionsPerIp,
    );
    this.http = http;
    const httpAddress = await http.listen();
    const { maxQueuedPerClient } = config.limits.queue;
    const drops = new QueueDropReporter(
      metrics,
      root.child({ module: "limits" }),
      maxQueuedPerClient,
    );
    const onQueueFull = (clientId: string, count: number) => drops.dropped(clientId, count);
    const backend = await createBackend(config, {
      log: root,
      metrics,
      queue: { maxQueuedPerClient, onQueueFull },
    });
    this.backend = backend;
    const audit = new AuditLog(root);
    const { admission, overload } = buildAdmission(config, backend, root);
    this.overload = overload;
    const authentication = { config, backend, security, slot, metrics, audit, contexts };
    const { devices, authenticator, enhancedAuth } = buildAuthentication(authentication);
    const subscribePacer = new SubscribePacer();
    const broker = await buildBroker({
      ...{ config, backend, authenticator, security, admission, contexts, onQueueFull, slot },
      ...{ subscribePacer, departurePacer: new DeparturePacer(), metrics, audit, log: root },
      heartbeatMs: this.heartbeatMs,
    });
    logBrokerEvents(broker, { contexts, metrics, log: root.child({ module: "mqtt" }) });
    const crl = new RegistryCrl(this.log);
    this.crl = crl;
    const parts: NodeParts = {
      ...{ config, broker, slot, backend, security, devices, contexts, crl, metrics, audit },
      log: root,
    };
    const signals = new ClusterSignals({ ...parts, serving: () => this.state === "ready" });
    await signals.listen();
    warnIfNobodyCanConnect(config, this.log);
    const opened = await openListeners({
      ...parts,
      ...{ admission, subscribePacer, byteMeter: this.byteMeter, enhancedAuth },
      // A fenced node cannot claim a client id: refused at once, the client tries elsewhere.
      accepting: () => this.state === "ready" && this.backend?.fence?.fenced !== true,
    });
    this.listeners = opened.listeners;
    const admin =
      config.admin && devices
        ? await startAdmin({ ...parts, admin: config.admin, devices, signals })
        : undefined;
    this.adminServer = admin?.server;
    this.reloadDeps = { ...parts, listeners: opened.listeners };
    this.boundAddresses = {
      listeners: opened.addresses,
      http: httpAddress,
      ...(admin === undefined ? {} : { admin: admin.address }),
    };
    this.watcher = watchForReload(config, () => this.reload(), this.log);
    this.state = "ready";
    this.log.info({ event: "node.ready", nodeId: config.nodeId }, "node ready");
  }

  /** Reloads password file, ACL and TLS material (SIGHUP, or a watched file changing). */
  async reload(): Promise<void> {
    if (this.state !== "ready" || this.reloadDeps === undefined) return;
    await reloadNode(this.reloadDeps);
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
    const parts = {
      stopServing: () => {
        this.state = "draining";
        this.watcher?.close();
        this.overload?.close();
      },
      listeners: this.listeners,
      broker: this.slot.current,
      publishWills: this.config.shutdown.publishWills,
      serverReference: this.config.shutdown.serverReference,
      closeAdmin: async () => {
        this.crl?.close();
        await this.adminServer?.close();
      },
      closeBackend: async () => this.backend?.close(),
      closeHttp: async () => this.http?.close(),
    };
    await runPhases(this.log, shutdownPhases(parts, drainMs, this.log));
    this.state = "stopped";
    this.log.info({ event: "node.stopped" }, "node stopped");
  }
}

function warnIfNobodyCanConnect(config: SluiceConfig, log: Logger): void {
  const { allowAnonymous, passwordFile, certificateIdentity } = config.auth;
  if (allowAnonymous || passwordFile !== undefined || certificateIdentity !== "none") return;
  log.warn(
    { event: "auth.nothing_configured" },
    "anonymous access is off and no authentication method is configured: every client will be refused",
  );
}
