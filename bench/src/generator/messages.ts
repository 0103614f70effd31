import type { ClientKind } from "./load-client.js";
import type { PublisherPlan, SubscriberPlan } from "./plan.js";
import type { ProtocolLevel } from "./protocol-level.js";

/**
 * The messages between the load coordinator and its generator processes (Node IPC, JSON).
 * Every exchange is bounded by a timeout on the coordinator's side.
 */
export type QoS = 0 | 1 | 2;

export interface ClientSettings {
  qos: QoS;
  payloadBytes: number;
  /** For mqtts:// and wss:// URLs: a CA file to trust, or no verification at all. */
  tls?: { caFile?: string; rejectUnauthorized?: boolean };
  /** CONNECT credentials, for brokers with password authentication (security-overhead). */
  credentials?: { username: string; password: string };
  /** The clients' MQTT protocol level: 4 (3.1.1) when absent, or 5. */
  protocolVersion?: ProtocolLevel;
  /** MQTT.js when absent; "raw" for RawClient (plain mqtt:// only). */
  clientKind?: ClientKind;
}

export interface PublisherSetup extends ClientSettings {
  type: "setup-publishers";
  publishers: PublisherPlan[];
  /** Unacknowledged messages a publisher may have out at once (QoS 0: unflushed writes). */
  inflightWindow: number;
  /**
   * Messages a publisher may be ahead of its slowest subscription (end-to-end flow control):
   * without it, QoS 0 at full speed only measures how much a broker can buffer.
   */
  endToEndWindow: number;
  /** Messages per second per publisher; absent: as fast as the window allows. */
  ratePerPublisher?: number;
  /** Messages one publisher sends in the whole run, at most; absent: no cap but time. */
  maxMessagesPerPublisher?: number;
}

export interface SubscriberSetup extends ClientSettings {
  type: "setup-subscribers";
  subscribers: SubscriberPlan[];
  publisherCount: number;
  /**
   * Each subscriber's processing time per message, spent before it acknowledges (QoS 1) and
   * reads the next: a fixed rate per subscriber, idle time, not CPU (see ServicePace).
   */
  serviceMs?: number;
}

/**
 * Per publisher index, how far its slowest subscription has received: the highest sequence
 * number seen plus one (so a lost QoS 0 message never stalls the publisher); null where no
 * subscription of that process follows the publisher.
 */
export interface DeliveredThrough {
  type: "delivered";
  through: Array<number | null>;
}

export interface StartCommand {
  type: "start";
  /** Load before the measurement window (connections warm, JIT done, queues at steady state). */
  warmupMs: number;
  measureMs: number;
  /** How long a publisher waits for its last acknowledgements after the window. */
  drainMs: number;
}

export interface FinishCommand {
  type: "finish";
  /** How many messages each publisher (by index) published in the whole run. */
  published: Record<number, number>;
}

export type CoordinatorMessage =
  | PublisherSetup
  | SubscriberSetup
  | StartCommand
  | FinishCommand
  | DeliveredThrough
  | { type: "exit" };

/** CPU a process used during the measurement window. */
export interface CpuWindow {
  userMicros: number;
  systemMicros: number;
  wallMicros: number;
}

export interface PublisherReport {
  index: number;
  published: number;
  acknowledged: number;
}

export interface SubscriptionReport {
  index: number;
  received: number;
  lost: number;
  duplicates: number;
}

export type WorkerMessage =
  | { type: "ready" }
  | { type: "progress"; count: number }
  | DeliveredThrough
  | {
      type: "published";
      publishers: PublisherReport[];
      /** Messages published inside the measurement window. */
      windowPublished: number;
      cpu: CpuWindow;
    }
  | {
      type: "report";
      subscriptions: SubscriptionReport[];
      /** Messages received inside the measurement window. */
      windowReceived: number;
      /** Latency histogram of the window's messages (microseconds, HDR compressed base64). */
      histogram: string;
      cpu: CpuWindow;
    }
  | { type: "failed"; error: string };
