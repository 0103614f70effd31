import mqtt, { type MqttClient } from "mqtt";
import { type History, parsePayload, payloadOf, type Qos } from "./history.js";

export interface WorkloadOptions {
  /** Where clients connect (the load balancer). */
  url: string;
  history: History;
  /** Publishers per QoS (1 and 2 each; QoS 0 gets one), persistent sessions. */
  publishersPerQos: number;
  /** Persistent-session subscribers of every data topic at QoS 2. */
  subscribers: number;
  /** Clients that hold a will and do nothing else; wills are watched by one more subscriber. */
  willClients: number;
  /** Milliseconds between two PUBLISHes of one publisher. */
  intervalMs: number;
  /** A prefix for client ids and topics, unique per run. */
  run: string;
  /**
   * Members of one shared group (`$share/<run>g/<run>/data/#` at QoS 2), persistent sessions
   * through the load balancer (so spread over the nodes round robin); 0: none.
   */
  sharedMembers?: number;
}

/** How long a client waits before reconnecting through the load balancer. */
const RECONNECT_MS = 250;
/** Retained topics the retained publisher keeps setting. */
export const RETAINED_TOPICS = 3;
/** How long a run that did not settle in time still waits for what was acknowledged last. */
const DELIVERY_GRACE_MS = 5_000;
/** The most the grace is stretched by acknowledgements that keep coming in it. */
const DELIVERY_GRACE_CAP_MS = 20_000;

/**
 * The traffic a chaos scenario keeps running through its fault: QoS 0, 1 and 2 publishers and
 * QoS 2 subscribers, all persistent sessions that reconnect through the load balancer by
 * themselves (MQTT.js resends unacknowledged messages on the resumed session), clients holding
 * wills, and a retained publisher. Everything each client sends, has acknowledged and receives
 * goes into the run's History. Publishing is bounded by `stopPublishing()`, which the test calls
 * in its `finally`.
 */
export class ChaosWorkload {
  private readonly clients: MqttClient[] = [];
  private readonly willHolders = new Map<string, MqttClient>();
  /** Will clients killed whose will has not arrived yet. */
  private readonly willsDue = new Set<string>();
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly unacked = new Set<Promise<unknown>>();
  /** Deliveries still owed: per subscriber, the acknowledged QoS 1/2 messages not yet got. */
  private readonly owed = new Map<string, Set<string>>();
  /** Messages sent before this are not owed (see lostBefore). */
  private owedFrom = 0;
  /** When a publisher last got an acknowledgement (Date.now()). */
  private lastAckedAt = 0;
  /** Off once settle() is done: a later acknowledgement is not held to no-loss. */
  private countingAcks = true;
  private readonly sentAt = new Map<string, number>();
  /** Per subscriber, every message it got (an acknowledgement may come after the delivery). */
  private readonly got = new Map<string, Set<string>>();
  private owedWaiters: Array<() => void> = [];
  /** Acknowledged QoS 1/2 messages no shared member has got yet. */
  private readonly sharedOwed = new Set<string>();
  /** Every message some shared member got. */
  private readonly sharedGot = new Set<string>();
  private readonly members = new Map<string, MqttClient>();
  /** Clients that subscribe again on a lost session (subscribers and shared members). */
  private readonly resubscribers = new Set<string>();
  private publishing = false;
  /** Per subscriber, when it last subscribed again on a session the broker had lost. */
  readonly resubscribedAt = new Map<string, number>();
  private readonly resubscribeWaiters = new Set<() => void>();
  readonly topics: string[] = [];

  private constructor(private readonly options: WorkloadOptions) {}

  static async start(options: WorkloadOptions): Promise<ChaosWorkload> {
    const workload = new ChaosWorkload(options);
    try {
      await workload.open();
    } catch (error) {
      await workload.end();
      throw error;
    }
    return workload;
  }

  /** The run's prefix of client ids and topics. */
  get run(): string {
    return this.options.run;
  }

  /**
   * The shared group's name as the broker reports it (`<share name>/<filter>`); undefined
   * without shared members.
   */
  get sharedGroup(): string | undefined {
    return this.members.size === 0 ? undefined : `${this.run}g/${this.run}/data/#`;
  }

  /** The shared members' client ids. */
  get sharedMemberIds(): string[] {
    return [...this.members.keys()];
  }

  /**
   * Drops one shared member's connection as a crash would (socket destroyed); it reconnects
   * through the load balancer by itself, and the group moves what it had not acknowledged.
   */
  dropSharedMember(clientId: string): void {
    const client = this.members.get(clientId);
    if (!client) throw new Error(`no shared member ${clientId}`);
    client.stream.destroy();
  }

  /** The client ids of the will clients still connected. */
  get willClientIds(): string[] {
    return [...this.willHolders.keys()];
  }

  /**
   * Drops one will client's connection as a crash would (its socket destroyed, no DISCONNECT):
   * its will is due exactly once.
   */
  killWillClient(clientId: string): void {
    const client = this.willHolders.get(clientId);
    if (!client) throw new Error(`no will client ${clientId}`);
    this.options.history.expectWill(clientId, "once");
    this.willHolders.delete(clientId);
    this.willsDue.add(clientId);
    client.options.reconnectPeriod = 0;
    client.stream.destroy();
  }

  /**
   * Resolves once every subscriber has subscribed again on a lost session since `since` (ms
   * since the epoch), or rejects after `ms`.
   */
  resubscribedSince(since: number, ms: number): Promise<void> {
    const done = (): boolean =>
      [...this.resubscribers].every((id) => (this.resubscribedAt.get(id) ?? 0) >= since);
    if (done()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.resubscribeWaiters.delete(check);
        reject(new Error(`subscribers not subscribed again within ${ms} ms`));
      }, ms);
      const check = (): void => {
        if (!done()) return;
        clearTimeout(timer);
        this.resubscribeWaiters.delete(check);
        resolve();
      };
      this.resubscribeWaiters.add(check);
    });
  }

  /**
   * What was sent before `at` may be lost (Redis lost its data): neither owed to subscribers
   * nor held to no-loss by the history.
   */
  lostBefore(at: number = Date.now()): void {
    this.owedFrom = at;
    this.options.history.checkLossFrom(at);
    for (const owed of this.owed.values()) {
      for (const id of owed) {
        const seq = Number(id.slice(id.lastIndexOf("|") + 1));
        const publisher = id.slice(0, id.lastIndexOf("|"));
        const sentAt = this.sentAt.get(`${publisher}|${seq}`) ?? 0;
        if (sentAt < at) owed.delete(id);
      }
    }
    for (const id of this.sharedOwed)
      if ((this.sentAt.get(id) ?? 0) < at) this.sharedOwed.delete(id);
  }

  /** Stops every publisher's timer; what is in flight may still be acknowledged. */
  stopPublishing(): void {
    this.publishing = false;
    for (const timer of this.timers) clearInterval(timer);
  }

  /**
   * Waits (up to `ms`) for every PUBLISH sent to be acknowledged or given up, then for every
   * subscriber to have each acknowledged QoS 1/2 message, and for the wills of killed clients;
   * resolves with whether all arrived. A message acknowledged as `ms` runs out still gets
   * DELIVERY_GRACE_MS to arrive, counted from the last acknowledgement (up to
   * DELIVERY_GRACE_CAP_MS in all): a publisher's resends of an outage can be acknowledged at the
   * last moment (the two-failover scenario, where replicas stay short for 15 s), and a message
   * acknowledged 20 ms before the history is read is no loss. An acknowledgement after it is
   * not held to no-loss (the message counts as unacknowledged).
   */
  async settle(ms: number): Promise<boolean> {
    try {
      return await this.settleWithin(ms);
    } finally {
      this.countingAcks = false;
    }
  }

  private async settleWithin(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    const left = (): number => Math.max(0, deadline - Date.now());
    const allAcked = await Promise.race([
      Promise.allSettled([...this.unacked]).then(() => true),
      wait(left()).then(() => false),
    ]);
    if (allAcked && (this.allDelivered() || (await this.deliveredWithin(left())))) return true;
    // Not settled in time: it says so, but what was acknowledged last still gets to arrive.
    const graceEnds = Date.now() + DELIVERY_GRACE_CAP_MS;
    for (;;) {
      const until = Math.min(graceEnds, this.lastAckedAt + DELIVERY_GRACE_MS);
      if (until <= Date.now() || (await this.deliveredWithin(until - Date.now()))) return false;
    }
  }

  /** Ends every client: wills of those still connected are not due (DISCONNECT). */
  async end(): Promise<void> {
    this.stopPublishing();
    await Promise.all(
      this.clients.map(
        (client) =>
          new Promise<void>((resolve) => {
            client.options.reconnectPeriod = 0;
            client.end(false, {}, () => resolve());
            setTimeout(() => client.end(true, {}, () => resolve()), 2_000).unref();
          }),
      ),
    );
  }

  private async open(): Promise<void> {
    const { run, history, publishersPerQos, subscribers, willClients } = this.options;
    const publishers: Array<{ id: string; qos: Qos }> = [{ id: `${run}-pub-q0`, qos: 0 }];
    for (let i = 0; i < publishersPerQos; i++) {
      publishers.push({ id: `${run}-pub-q1-${i}`, qos: 1 }, { id: `${run}-pub-q2-${i}`, qos: 2 });
    }
    for (const { id } of publishers) this.topics.push(`${run}/data/${id}`);
    for (let i = 0; i < subscribers; i++) {
      const id = `${run}-sub-${i}`;
      this.owed.set(id, new Set());
      this.got.set(id, new Set());
      const client = await this.connect(id, { resubscribe: false });
      this.resubscribeOnLostSession(id, client, `${run}/data/#`);
      client.on("message", (topic, payload, packet) => {
        history.received(id, topic, payload, packet.qos);
        const parsed = parsePayload(payload);
        if (parsed) this.delivered(id, `${parsed.publisher}|${parsed.seq}`);
      });
      await client.subscribeAsync(`${run}/data/#`, { qos: 2 });
      for (const topic of this.topics) history.subscribed(id, topic, 2);
    }
    await this.openSharedMembers();
    const watcher = await this.connect(`${run}-willwatch`);
    watcher.on("message", (topic) => {
      const clientId = topic.slice(`${run}/will/`.length);
      if (!topic.startsWith(`${run}/will/`)) return;
      history.willPublished(clientId);
      if (this.willsDue.delete(clientId)) this.delivered("", "");
    });
    await watcher.subscribeAsync(`${run}/will/#`, { qos: 2 });
    for (let i = 0; i < willClients; i++) {
      const id = `${run}-will-${i}`;
      const client = await this.connect(id, {
        will: { topic: `${run}/will/${id}`, payload: Buffer.from(id), qos: 2, retain: false },
        reconnectPeriod: 0,
      });
      history.expectWill(id, "never");
      // Closed by the server or cut at the load balancer: the server may publish the will.
      client.once("close", () => {
        if (this.willHolders.delete(id)) history.expectWill(id, "at-most-once");
      });
      this.willHolders.set(id, client);
    }
    const retainer = await this.connect(`${run}-retainer`);
    this.publishing = true;
    for (const { id, qos } of publishers) {
      const client = await this.connect(id);
      const topic = `${run}/data/${id}`;
      let seq = 0;
      this.timers.push(
        setInterval(() => {
          if (!this.publishing) return;
          const n = seq++;
          const sentAt = Date.now();
          history.sent(id, topic, n, qos);
          this.sentAt.set(`${id}|${n}`, sentAt);
          const sent = client.publishAsync(topic, payloadOf(id, n), { qos }).then(() => {
            if (!this.countingAcks) return;
            history.acked(id, topic, n);
            this.lastAckedAt = Date.now();
            if (qos === 0 || sentAt < this.owedFrom) return;
            if (this.members.size > 0 && !this.sharedGot.has(`${id}|${n}`)) {
              this.sharedOwed.add(`${id}|${n}`);
            }
            for (const [subscriber, owed] of this.owed) {
              if (!this.got.get(subscriber)?.has(`${id}|${n}`)) owed.add(`${id}|${n}`);
            }
          });
          this.track(sent);
        }, this.options.intervalMs),
      );
    }
    let retainedSeq = 0;
    this.timers.push(
      setInterval(() => {
        if (!this.publishing) return;
        const n = retainedSeq++;
        const topic = `${run}/retained/r${n % RETAINED_TOPICS}`;
        this.track(retainer.publishAsync(topic, String(n), { qos: 1, retain: true }));
      }, this.options.intervalMs * 2),
    );
  }

  /** The shared group's members, each logging what it got and when its connection went. */
  private async openSharedMembers(): Promise<void> {
    const { run, history, sharedMembers = 0 } = this.options;
    const filter = `$share/${run}g/${run}/data/#`;
    for (let i = 0; i < sharedMembers; i++) {
      const id = `${run}-member-${i}`;
      const client = await this.connect(id, { resubscribe: false });
      this.members.set(id, client);
      this.resubscribeOnLostSession(id, client, filter);
      client.on("close", () => history.shared.disrupted(id));
      client.on("message", (topic, payload, packet) => {
        history.sharedReceived(id, topic, payload, packet.qos);
        const parsed = parsePayload(payload);
        if (!parsed) return;
        const message = `${parsed.publisher}|${parsed.seq}`;
        this.sharedGot.add(message);
        if (this.sharedOwed.delete(message)) this.delivered("", "");
      });
      await client.subscribeAsync(filter, { qos: 2 });
      history.shared.joined(`${run}g/${run}/data/#`, id, this.topics, 2);
    }
  }

  /** A session the broker no longer has (Redis lost its data): subscribe again, and say when. */
  private resubscribeOnLostSession(id: string, client: MqttClient, filter: string): void {
    this.resubscribers.add(id);
    client.on("connect", (connack) => {
      if (connack.sessionPresent) return;
      void client.subscribeAsync(filter, { qos: 2 }).then(
        () => {
          this.resubscribedAt.set(id, Date.now());
          for (const check of [...this.resubscribeWaiters]) check();
        },
        () => {},
      );
    });
  }

  private track(sent: Promise<unknown>): void {
    const tracked = sent.catch(() => {});
    this.unacked.add(tracked);
    void tracked.then(() => this.unacked.delete(tracked));
  }

  /** A delivery (or a due will: no subscriber) arrived: wake settle() once all have. */
  private delivered(subscriber: string, id: string): void {
    this.got.get(subscriber)?.add(id);
    this.owed.get(subscriber)?.delete(id);
    if (this.allDelivered()) {
      for (const waiter of this.owedWaiters) waiter();
      this.owedWaiters = [];
    }
  }

  private allDelivered(): boolean {
    return (
      this.willsDue.size === 0 &&
      this.sharedOwed.size === 0 &&
      [...this.owed.values()].every((owed) => owed.size === 0)
    );
  }

  private deliveredWithin(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(this.allDelivered()), ms);
      this.owedWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  private async connect(clientId: string, extra: mqtt.IClientOptions = {}): Promise<MqttClient> {
    const client = mqtt.connect(this.options.url, {
      clientId,
      clean: false,
      protocolVersion: 4,
      reconnectPeriod: RECONNECT_MS,
      connectTimeout: 5_000,
      keepalive: 10,
      ...extra,
    });
    this.clients.push(client);
    client.on("error", () => {});
    await new Promise<void>((resolve, reject) => {
      client.once("connect", () => resolve());
      client.once("error", reject);
    });
    return client;
  }
}

function wait(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
