/**
 * A generator process: runs either a group of publishers or a group of subscribers, driven by
 * the coordinator over IPC (see messages.ts). Started by load-run.ts with child_process.fork.
 */
import { readFileSync } from "node:fs";
import hdr from "hdr-histogram-js";
import type { IClientOptions, MqttClient } from "mqtt";
import { connect } from "../../../harness/mqtt-client.js";
import { CpuWindowMeter } from "./cpu-window.js";
import type { LoadClient } from "./load-client.js";
import type {
  ClientSettings,
  CoordinatorMessage,
  FinishCommand,
  PublisherSetup,
  StartCommand,
  SubscriberSetup,
  WorkerMessage,
} from "./messages.js";
import type { PublisherPlan, SubscriberPlan } from "./plan.js";
import { PublisherLoop } from "./publisher-loop.js";
import { RawClient } from "./raw-client.js";
import { paceMessages } from "./service-pace.js";
import { SubscriberSet } from "./subscriber-set.js";

const PROGRESS_INTERVAL_MS = 250;
/**
 * How often subscribers report how far they have received (end-to-end flow control). The
 * end-to-end window must cover what publishers send in about two of these.
 */
const FEEDBACK_INTERVAL_MS = 20;

function send(message: WorkerMessage): void {
  process.send?.(message);
}

function clientOptions(settings: ClientSettings, clientId: string): IClientOptions {
  const options: IClientOptions = { clientId, clean: true, keepalive: 60 };
  if (settings.tls?.caFile) options.ca = readFileSync(settings.tls.caFile);
  if (settings.tls?.rejectUnauthorized === false) options.rejectUnauthorized = false;
  if (settings.credentials) {
    options.username = settings.credentials.username;
    options.password = settings.credentials.password;
  }
  // MQTT.js builds its packets and its parser for this level (mqtt-packet's generate/parse).
  if (settings.protocolVersion !== undefined) options.protocolVersion = settings.protocolVersion;
  return options;
}

/**
 * A connection that fails mid-run fails the run: its numbers would be meaningless. Nagle's
 * algorithm is turned off: with it, a QoS 0 publisher (no PUBACK coming back to carry the
 * receiver's ACK) holds each small PUBLISH until the broker's delayed ACK, and latency shows
 * Linux' 40 ms delayed-ACK timer instead of the broker.
 */
function watch(client: MqttClient, clientId: string): MqttClient {
  client.on("error", (error) => send({ type: "failed", error: `${clientId}: ${error.message}` }));
  const socket = client.stream as { setNoDelay?: (noDelay: boolean) => unknown };
  socket.setNoDelay?.(true);
  return client;
}

/** A connected client of the kind the settings ask for (RawClient turns Nagle off itself). */
async function connectClient(
  settings: ClientSettings,
  plan: PublisherPlan | SubscriberPlan,
): Promise<LoadClient> {
  if (settings.clientKind === "raw") {
    const client = await RawClient.connect(plan.url, {
      clientId: plan.clientId,
      protocolVersion: settings.protocolVersion ?? 4,
      ...(plan.fromAddress === undefined ? {} : { fromAddress: plan.fromAddress }),
      ...(settings.credentials ? { credentials: settings.credentials } : {}),
    });
    client.on("error", (error) =>
      send({ type: "failed", error: `${plan.clientId}: ${error.message}` }),
    );
    return client;
  }
  const client = await connect(plan.url, {
    ...clientOptions(settings, plan.clientId),
    fromAddress: plan.fromAddress,
  });
  return watch(client, plan.clientId);
}

interface Role {
  start(command: StartCommand): void;
  delivered?(through: Array<number | null>): void;
  finish?(command: FinishCommand): void;
  close(): void;
}

class PublisherRole implements Role {
  private readonly cpu = new CpuWindowMeter();
  private progress: NodeJS.Timeout | undefined;

  private constructor(
    private readonly clients: LoadClient[],
    private readonly loops: PublisherLoop[],
  ) {}

  static async create(setup: PublisherSetup): Promise<PublisherRole> {
    const clients = await Promise.all(setup.publishers.map((plan) => connectClient(setup, plan)));
    const loops = setup.publishers.map((plan, i) => {
      const client = clients[i];
      if (!client) throw new Error("publisher client missing");
      return new PublisherLoop(
        client,
        plan.index,
        plan.topic,
        setup.qos,
        setup.payloadBytes,
        setup.inflightWindow,
        setup.endToEndWindow,
        setup.ratePerPublisher,
        setup.maxMessagesPerPublisher,
        setup.protocolVersion,
      );
    });
    return new PublisherRole(clients, loops);
  }

  start({ warmupMs, measureMs, drainMs }: StartCommand): void {
    let publishedAtWindowStart = 0;
    const total = (): number => this.loops.reduce((sum, loop) => sum + loop.published, 0);
    for (const loop of this.loops) loop.start();
    this.progress = setInterval(
      () => send({ type: "progress", count: total() }),
      PROGRESS_INTERVAL_MS,
    );
    setTimeout(() => {
      publishedAtWindowStart = total();
      this.cpu.begin();
    }, warmupMs);
    setTimeout(async () => {
      this.cpu.end();
      const windowPublished = total() - publishedAtWindowStart;
      await Promise.all(this.loops.map((loop) => loop.stop(drainMs)));
      clearInterval(this.progress);
      send({
        type: "published",
        publishers: this.loops.map((loop) => ({
          index: loop.index,
          published: loop.published,
          acknowledged: loop.acknowledged,
        })),
        windowPublished,
        cpu: this.cpu.window,
      });
    }, warmupMs + measureMs);
  }

  delivered(through: Array<number | null>): void {
    for (const loop of this.loops) {
      const count = through[loop.index];
      if (count !== null && count !== undefined) loop.setDeliveredThrough(count);
    }
  }

  close(): void {
    clearInterval(this.progress);
    for (const client of this.clients) client.end(true);
  }
}

class SubscriberRole implements Role {
  private readonly cpu = new CpuWindowMeter();
  private readonly set = new SubscriberSet();
  private progress: NodeJS.Timeout | undefined;
  private feedback: NodeJS.Timeout | undefined;

  private constructor(
    private readonly clients: LoadClient[],
    private readonly publisherCount: number,
  ) {}

  static async create(setup: SubscriberSetup): Promise<SubscriberRole> {
    const role = new SubscriberRole([], setup.publisherCount);
    await Promise.all(
      setup.subscribers.map(async (plan) => {
        const client = await connectClient(setup, plan);
        role.clients.push(client);
        role.set.attach(client, plan);
        if (setup.serviceMs !== undefined) {
          // Pacing holds MQTT.js' reading: the raw clients have no such hook.
          if (client instanceof RawClient)
            throw new Error("paced subscribers need --client mqtt.js");
          paceMessages(client as MqttClient, setup.serviceMs);
        }
        await client.subscribeAsync(plan.filter, { qos: setup.qos });
      }),
    );
    return role;
  }

  start({ warmupMs, measureMs }: StartCommand): void {
    const now = process.hrtime.bigint();
    const windowStart = now + BigInt(warmupMs) * 1_000_000n;
    this.set.setWindow(windowStart, windowStart + BigInt(measureMs) * 1_000_000n);
    this.progress = setInterval(
      () => send({ type: "progress", count: this.set.received }),
      PROGRESS_INTERVAL_MS,
    );
    this.feedback = setInterval(
      () => send({ type: "delivered", through: this.set.deliveredThrough(this.publisherCount) }),
      FEEDBACK_INTERVAL_MS,
    );
    setTimeout(() => this.cpu.begin(), warmupMs);
    setTimeout(() => this.cpu.end(), warmupMs + measureMs);
  }

  finish({ published }: FinishCommand): void {
    clearInterval(this.progress);
    clearInterval(this.feedback);
    send({
      type: "report",
      subscriptions: this.set.reports(published),
      windowReceived: this.set.windowReceived,
      histogram: hdr.encodeIntoCompressedBase64(this.set.histogram),
      cpu: this.cpu.window,
    });
  }

  close(): void {
    clearInterval(this.progress);
    clearInterval(this.feedback);
    for (const client of this.clients) client.end(true);
  }
}

let role: Role | undefined;

async function handle(message: CoordinatorMessage): Promise<void> {
  switch (message.type) {
    case "setup-publishers":
      role = await PublisherRole.create(message);
      send({ type: "ready" });
      return;
    case "setup-subscribers":
      role = await SubscriberRole.create(message);
      send({ type: "ready" });
      return;
    case "start":
      role?.start(message);
      return;
    case "finish":
      role?.finish?.(message);
      return;
    case "delivered":
      role?.delivered?.(message.through);
      return;
    case "exit":
      role?.close();
      setImmediate(() => process.exit(0));
      return;
  }
}

process.on("message", (message: CoordinatorMessage) => {
  handle(message).catch((error: unknown) => {
    send({ type: "failed", error: error instanceof Error ? error.message : String(error) });
  });
});
// The coordinator is gone (crashed or interrupted): nothing left to report to.
process.on("disconnect", () => process.exit(0));
