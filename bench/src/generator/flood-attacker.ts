/**
 * The flood scenario's attacker: a generator process (forked by flood-attack.ts, so that its
 * CPU is not the coordinator's) that attacks one broker from loopback addresses of its own
 * with raw sockets and pre-encoded packets, the cheapest way to send the most:
 * - publish floods: one client per QoS writing PUBLISH packets as fast as the socket takes
 *   them (QoS 1 with a bounded number unacknowledged), and a subscriber of its own counting
 *   what got through;
 * - a connection flood from one address, paced, far over the per-address rate and quota;
 * - slowloris: silent sockets that never send a CONNECT;
 * - an oversize packet: a PUBLISH header announcing more than maxPacketBytes.
 * Every attack is bounded in count and time and reports what it achieved.
 */
import { connect, type Socket } from "node:net";
import { mqttString, remainingLength } from "../../../harness/raw-socket.js";
import { connectPacket, whenConnack } from "./connect-packets.js";
import { CpuWindowMeter } from "./cpu-window.js";
import type { CpuWindow } from "./messages.js";
import {
  PacketReader,
  PUBACK,
  PUBLISH,
  publishTemplate,
  SUBACK,
  subscribePacket,
} from "./raw-packets.js";

/**
 * Attackers ask for a keep-alive a node accepts (the recommended limits refuse 0) and then
 * never ping: within one attacked window the node must hold them as it would real clients.
 */
const ATTACKER_KEEPALIVE_SECONDS = 60;

export interface PublishFloodPlan {
  fromAddress: string;
  /** Where the attacker's own subscriber connects from (counts what got through). */
  subscriberFromAddress: string;
  /** Topics are `${topicPrefix}/q0` and `${topicPrefix}/q1`. */
  topicPrefix: string;
  clientIdPrefix: string;
  payloadBytes: number;
  /** One flooding client per QoS listed (none: no publish flood). */
  qos: Array<0 | 1>;
  /** QoS 1 PUBLISH packets written but not yet acknowledged, at most. */
  maxUnacknowledged: number;
}

export interface ConnectionFloodPlan {
  fromAddress: string;
  clientIdPrefix: string;
  attemptsPerSecond: number;
  /** A hard cap on attempts, whatever the duration. */
  maxAttempts: number;
  /** Attempts awaiting their outcome at once, at most. */
  window: number;
}

export interface SlowlorisPlan {
  /** Addresses the silent sockets come from, `socketsPerAddress` each. */
  fromAddresses: string[];
  socketsPerAddress: number;
  /** How long to wait for the broker to close them (its connectTimeoutMs and a margin). */
  waitForCloseMs: number;
}

export interface OversizePlan {
  fromAddress: string;
  clientId: string;
  /** The remaining length the PUBLISH header announces. */
  announcedBytes: number;
}

export interface AttackPlan {
  host: string;
  port: number;
  publishFlood: PublishFloodPlan;
  connectionFlood: ConnectionFloodPlan;
  slowloris: SlowlorisPlan;
  oversize: OversizePlan;
}

export interface PublishFloodReport {
  qos: 0 | 1;
  /** PUBLISH packets the socket took (buffered included: the broker may not have read them). */
  written: number;
  /** QoS 1: PUBACKs received during the attack. */
  acknowledged: number;
  /** Messages the attacker's subscriber received while the attack ran. */
  deliveredInWindow: number;
  closedByBroker: boolean;
}

export interface ConnectionFloodReport {
  attempts: number;
  accepted: number;
  /** Closed by the broker before a CONNACK: refused at the socket (rate, per-address quota). */
  closedWithoutConnack: number;
  /** A CONNACK other than 0 (3: server unavailable). */
  refusedWithConnack: number;
  /** Errors before the TCP connection was up, or no answer within the attempt timeout. */
  failed: number;
}

export interface SlowlorisReport {
  opened: number;
  /** Sockets the broker closed within waitForCloseMs of their opening. */
  closedByBroker: number;
  /** The earliest and latest close after opening, in ms (null: none closed). */
  firstClosedAfterMs: number | null;
  lastClosedAfterMs: number | null;
  failed: number;
}

export interface OversizeReport {
  /** The CONNECT before the oversize PUBLISH was accepted. */
  connected: boolean;
  closedByBroker: boolean;
  closedAfterMs: number | null;
  /** Body bytes the socket took before the close (the broker need not have read them). */
  bodyBytesWritten: number;
}

export interface AttackReport {
  durationMs: number;
  publishFloods: PublishFloodReport[];
  connectionFlood: ConnectionFloodReport;
  slowloris: SlowlorisReport;
  oversize: OversizeReport;
  cpu: CpuWindow;
}

export type AttackerCommand =
  | { type: "setup"; plan: AttackPlan }
  | { type: "start"; delayMs: number; durationMs: number }
  | { type: "exit" };

export type AttackerMessage =
  | { type: "ready" }
  | { type: "report"; report: AttackReport }
  | { type: "failed"; error: string };

const CONNECT_TIMEOUT_MS = 5_000;
/** PUBLISH packets per socket write: one syscall for many packets, as a tight loop would do. */
const PACKETS_PER_WRITE = 64;
/** The oversize attack writes at most this much body before giving up on a close. */
const OVERSIZE_BODY_LIMIT = 1_048_576;
const OVERSIZE_CHUNK = Buffer.alloc(16_384, 0x61);

function send(message: AttackerMessage): void {
  process.send?.(message);
}

/** A raw socket from `fromAddress` with a CONNECT answered by CONNACK 0. */
async function connectedSocket(
  plan: AttackPlan,
  fromAddress: string,
  clientId: string,
): Promise<Socket> {
  const socket = connect({ host: plan.host, port: plan.port, localAddress: fromAddress });
  socket.setNoDelay(true);
  socket.on("error", () => {});
  const connacked = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${clientId}: no CONNACK`)),
      CONNECT_TIMEOUT_MS,
    );
    const onClose = (): void => {
      clearTimeout(timer);
      reject(new Error(`${clientId} from ${fromAddress}: closed before CONNACK`));
    };
    socket.once("connect", () => socket.write(connectPacket(clientId, ATTACKER_KEEPALIVE_SECONDS)));
    socket.once("close", onClose);
    whenConnack(socket, (code) => {
      clearTimeout(timer);
      socket.off("close", onClose);
      if (code === 0) resolve();
      else reject(new Error(`${clientId}: CONNACK ${String(code)}`));
    });
  });
  try {
    await connacked;
  } catch (error) {
    socket.destroy();
    throw error;
  }
  return socket;
}

/** One client publishing as fast as its socket takes it (QoS 1: within its unacknowledged cap). */
class PublishFlooder {
  written = 0;
  acknowledged = 0;
  closedByBroker = false;
  private running = false;
  private scheduled = false;
  private waitingForDrain = false;
  private nextPacketId = 1;
  private readonly template: { bytes: Buffer; packetIdOffset: number };
  /** QoS 0 writes the same bytes every time: nothing in them changes. */
  private readonly qos0Batch: Buffer | undefined;

  constructor(
    private readonly socket: Socket,
    readonly qos: 0 | 1,
    topic: string,
    payloadBytes: number,
    private readonly maxUnacknowledged: number,
  ) {
    this.template = publishTemplate(topic, qos, payloadBytes);
    this.qos0Batch =
      qos === 0
        ? Buffer.concat(Array.from({ length: PACKETS_PER_WRITE }, () => this.template.bytes))
        : undefined;
    const reader = new PacketReader((first) => {
      if (first >> 4 !== PUBACK || !this.running) return;
      this.acknowledged++;
      this.schedule();
    });
    socket.on("data", (chunk: Buffer) => reader.push(chunk));
    socket.once("close", () => {
      if (this.running) this.closedByBroker = true;
      this.running = false;
    });
  }

  start(): void {
    this.running = true;
    this.schedule();
  }

  stop(): void {
    this.running = false;
  }

  /** Drops the connection with a reset: the broker discards what it has not read yet. */
  destroy(): void {
    this.running = false;
    this.socket.resetAndDestroy();
  }

  private schedule(): void {
    if (this.scheduled || this.waitingForDrain || !this.running) return;
    this.scheduled = true;
    setImmediate(this.pump);
  }

  private readonly pump = (): void => {
    this.scheduled = false;
    if (!this.running || this.socket.destroyed) return;
    const count =
      this.qos === 0
        ? PACKETS_PER_WRITE
        : Math.min(PACKETS_PER_WRITE, this.maxUnacknowledged - (this.written - this.acknowledged));
    if (count <= 0) return; // the next PUBACK schedules the next write
    const batch = this.qos0Batch ?? this.qos1Batch(count);
    this.written += count;
    if (this.socket.write(batch)) {
      this.schedule();
      return;
    }
    this.waitingForDrain = true;
    this.socket.once("drain", () => {
      this.waitingForDrain = false;
      this.schedule();
    });
  };

  private qos1Batch(count: number): Buffer {
    const { bytes, packetIdOffset } = this.template;
    const batch = Buffer.allocUnsafe(bytes.length * count);
    for (let i = 0; i < count; i++) {
      const at = i * bytes.length;
      bytes.copy(batch, at);
      batch.writeUInt16BE(this.nextPacketId, at + packetIdOffset);
      this.nextPacketId = this.nextPacketId === 0xffff ? 1 : this.nextPacketId + 1;
    }
    return batch;
  }
}

/** The attacker's own subscriber: counts, per topic, the messages that arrive while it counts. */
class DeliveryCounter {
  counting = false;
  readonly delivered = new Map<string, number>();

  constructor(socket: Socket) {
    const reader = new PacketReader((first, body) => {
      if (first >> 4 !== PUBLISH || !this.counting) return;
      const topic = body.subarray(2, 2 + body.readUInt16BE(0)).toString("utf8");
      this.delivered.set(topic, (this.delivered.get(topic) ?? 0) + 1);
    });
    socket.on("data", (chunk: Buffer) => reader.push(chunk));
  }
}

async function subscribed(socket: Socket, filter: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no SUBACK")), CONNECT_TIMEOUT_MS);
    const reader = new PacketReader((first) => {
      if (first >> 4 !== SUBACK) return;
      clearTimeout(timer);
      socket.off("data", onData);
      resolve();
    });
    const onData = (chunk: Buffer): void => reader.push(chunk);
    socket.on("data", onData);
    socket.write(subscribePacket(filter));
  });
}

/** Paced CONNECT attempts from one address; accepted connections are held open. */
class ConnectionFlood {
  readonly report: ConnectionFloodReport = {
    attempts: 0,
    accepted: 0,
    closedWithoutConnack: 0,
    refusedWithConnack: 0,
    failed: 0,
  };
  private pending = 0;
  private timer: NodeJS.Timeout | undefined;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly target: { host: string; port: number },
    private readonly plan: ConnectionFloodPlan,
    private readonly held: Set<Socket>,
  ) {}

  start(): void {
    const startedAt = performance.now();
    this.timer = setInterval(() => {
      const due = Math.min(
        this.plan.maxAttempts,
        Math.floor(((performance.now() - startedAt) / 1000) * this.plan.attemptsPerSecond),
      );
      while (this.report.attempts < due && this.pending < this.plan.window) this.attempt();
    }, 5);
  }

  /** Stops starting attempts; resolves once every attempt under way has its outcome. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    if (this.pending === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  private attempt(): void {
    const clientId = `${this.plan.clientIdPrefix}${this.report.attempts++}`;
    this.pending++;
    const socket = connect({ ...this.target, localAddress: this.plan.fromAddress });
    let connected = false;
    let settled = false;
    const settle = (outcome: keyof ConnectionFloodReport): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timeout);
      this.report[outcome]++;
      if (--this.pending === 0) for (const waiter of this.idleWaiters.splice(0)) waiter();
    };
    const timeout = setTimeout(() => {
      settle("failed");
      socket.destroy();
    }, CONNECT_TIMEOUT_MS);
    socket.on("error", () => {});
    socket.once("connect", () => {
      connected = true;
      socket.write(connectPacket(clientId, ATTACKER_KEEPALIVE_SECONDS));
    });
    whenConnack(socket, (code) => {
      if (settled) return;
      if (code === 0) {
        this.held.add(socket);
        settle("accepted");
        return;
      }
      settle("refusedWithConnack");
      socket.destroy();
    });
    socket.once("close", () => {
      this.held.delete(socket);
      settle(connected ? "closedWithoutConnack" : "failed");
    });
  }
}

/** Silent sockets: the broker should close each at its connectTimeoutMs. */
async function slowloris(
  target: { host: string; port: number },
  plan: SlowlorisPlan,
  sockets: Set<Socket>,
): Promise<SlowlorisReport> {
  const closeTimes: number[] = [];
  let opened = 0;
  let failed = 0;
  const attempts = plan.fromAddresses.flatMap((fromAddress) =>
    Array.from(
      { length: plan.socketsPerAddress },
      () =>
        new Promise<void>((resolve) => {
          const socket = connect({ ...target, localAddress: fromAddress });
          sockets.add(socket);
          let openedAt: number | undefined;
          const timer = setTimeout(resolve, plan.waitForCloseMs);
          socket.on("error", () => {});
          socket.once("connect", () => {
            openedAt = performance.now();
            opened++;
          });
          socket.once("close", () => {
            clearTimeout(timer);
            sockets.delete(socket);
            if (openedAt === undefined) failed++;
            else closeTimes.push(performance.now() - openedAt);
            resolve();
          });
        }),
    ),
  );
  await Promise.all(attempts);
  return {
    opened,
    closedByBroker: closeTimes.length,
    firstClosedAfterMs: closeTimes.length === 0 ? null : Math.round(Math.min(...closeTimes)),
    lastClosedAfterMs: closeTimes.length === 0 ? null : Math.round(Math.max(...closeTimes)),
    failed,
  };
}

/** CONNECT, then a PUBLISH header announcing more than the broker takes, then body until closed. */
async function oversize(plan: AttackPlan, sockets: Set<Socket>): Promise<OversizeReport> {
  const { oversize: o } = plan;
  let socket: Socket;
  try {
    socket = await connectedSocket(plan, o.fromAddress, o.clientId);
  } catch {
    return { connected: false, closedByBroker: false, closedAfterMs: null, bodyBytesWritten: 0 };
  }
  sockets.add(socket);
  const sentAt = performance.now();
  let bodyBytesWritten = 0;
  const closed = new Promise<number>((resolve) =>
    socket.once("close", () => resolve(performance.now() - sentAt)),
  );
  // Only the fixed header and the topic: the broker should refuse from the announced length.
  socket.write(
    Buffer.concat([Buffer.from([0x30]), remainingLength(o.announcedBytes), mqttString("flood/x")]),
  );
  while (!socket.destroyed && bodyBytesWritten < OVERSIZE_BODY_LIMIT) {
    bodyBytesWritten += OVERSIZE_CHUNK.length;
    if (!socket.write(OVERSIZE_CHUNK))
      await Promise.race([new Promise((r) => socket.once("drain", r)), closed]);
  }
  const closedAfterMs = await Promise.race([
    closed,
    new Promise<null>((r) => setTimeout(() => r(null), CONNECT_TIMEOUT_MS)),
  ]);
  sockets.delete(socket);
  return {
    connected: true,
    closedByBroker: closedAfterMs !== null,
    closedAfterMs: closedAfterMs === null ? null : Math.round(closedAfterMs),
    bodyBytesWritten,
  };
}

interface Armed {
  plan: AttackPlan;
  flooders: PublishFlooder[];
  counter: DeliveryCounter;
  /** Every other socket still open (held connections, slowloris, the subscriber). */
  sockets: Set<Socket>;
}

let armed: Armed | undefined;

async function setup(plan: AttackPlan): Promise<void> {
  const { publishFlood: p } = plan;
  const sockets = new Set<Socket>();
  const subscriber = await connectedSocket(
    plan,
    p.subscriberFromAddress,
    `${p.clientIdPrefix}watch`,
  );
  sockets.add(subscriber);
  const counter = new DeliveryCounter(subscriber);
  await subscribed(subscriber, `${p.topicPrefix}/#`);
  const flooders = await Promise.all(
    p.qos.map(
      async (qos) =>
        new PublishFlooder(
          await connectedSocket(plan, p.fromAddress, `${p.clientIdPrefix}q${qos}`),
          qos,
          `${p.topicPrefix}/q${qos}`,
          p.payloadBytes,
          p.maxUnacknowledged,
        ),
    ),
  );
  armed = { plan, flooders, counter, sockets };
}

async function attack(durationMs: number): Promise<AttackReport> {
  if (!armed) throw new Error("start before setup");
  const { plan, flooders, counter, sockets } = armed;
  const target = { host: plan.host, port: plan.port };
  const cpu = new CpuWindowMeter();
  cpu.begin();
  const startedAt = performance.now();
  counter.counting = true;
  for (const flooder of flooders) flooder.start();
  const connectionFlood = new ConnectionFlood(target, plan.connectionFlood, sockets);
  connectionFlood.start();
  const slowlorisDone = slowloris(target, plan.slowloris, sockets);
  const oversizeDone = oversize(plan, sockets);
  await new Promise((resolve) => setTimeout(resolve, durationMs));
  counter.counting = false;
  for (const flooder of flooders) flooder.stop();
  await connectionFlood.stop();
  cpu.end();
  const [slowlorisReport, oversizeReport] = await Promise.all([slowlorisDone, oversizeDone]);
  return {
    durationMs: Math.round(performance.now() - startedAt),
    publishFloods: flooders.map((f) => ({
      qos: f.qos,
      written: f.written,
      acknowledged: f.acknowledged,
      deliveredInWindow: counter.delivered.get(`${plan.publishFlood.topicPrefix}/q${f.qos}`) ?? 0,
      closedByBroker: f.closedByBroker,
    })),
    connectionFlood: connectionFlood.report,
    slowloris: slowlorisReport,
    oversize: oversizeReport,
    cpu: cpu.window,
  };
}

function shutdown(): void {
  for (const flooder of armed?.flooders ?? []) flooder.destroy();
  for (const socket of armed?.sockets ?? []) socket.destroy();
  setImmediate(() => process.exit(0));
}

process.on("message", (command: AttackerCommand) => {
  const fail = (error: unknown): void =>
    send({ type: "failed", error: error instanceof Error ? error.message : String(error) });
  if (command.type === "setup") {
    setup(command.plan).then(() => send({ type: "ready" }), fail);
  } else if (command.type === "start") {
    setTimeout(() => {
      attack(command.durationMs).then((report) => send({ type: "report", report }), fail);
    }, command.delayMs);
  } else {
    shutdown();
  }
});
// The coordinator is gone: nothing left to attack for.
process.on("disconnect", () => process.exit(0));
