/**
 * The bench's view of a Sluice node's /metrics: refusals by reason, throttle episodes, protocol
 * errors, dropped deliveries, open connections and cut Redis subscriptions, as the node itself
 * counts them.
 */
export interface SluiceCounters {
  /** sluice_connections_rejected_total by reason. */
  rejected: Record<string, number>;
  /** sluice_protocol_errors_total by reason. */
  protocolErrors: Record<string, number>;
  /** sluice_dropped_messages_total by reason: deliveries a limit dropped (slow_consumer, queue_full). */
  dropped: Record<string, number>;
  /** sluice_publish_throttled_total. */
  throttled: number;
  /** sluice_messages_received_total: PUBLISH packets the node took from clients. */
  messagesReceived: number;
  /** sluice_connections, all listeners added up. */
  openConnections: number;
  /**
   * The node's longest event-loop delay since the previous scrape (prom-client resets its
   * histogram on every scrape): read after a phase, a stall of the node during it.
   */
  eventLoopDelayMaxMs: number;
  /**
   * sluice_redis_subscription_resets_total: Redis subscriptions the node lost (cut by Redis,
   * or dropped); null when the node does not expose the series.
   */
  redisSubscriptionResets: number | null;
  /**
   * sluice_cluster_backpressure_seconds_total: time the node held its publishers for Redis or
   * another node (counted as each episode ends).
   */
  backpressureSeconds: number;
  /**
   * sluice_cluster_subscription_paused_seconds_total: time the node did not read its Redis
   * subscription because its subscribers' windows were full (counted as each episode ends).
   */
  subscriptionPausedSeconds: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** Reads the counters above from Prometheus text exposition. */
export function parseSluiceCounters(text: string): SluiceCounters {
  const counters: SluiceCounters = {
    rejected: {},
    protocolErrors: {},
    dropped: {},
    throttled: 0,
    messagesReceived: 0,
    openConnections: 0,
    eventLoopDelayMaxMs: 0,
    redisSubscriptionResets: null,
    backpressureSeconds: 0,
    subscriptionPausedSeconds: 0,
  };
  for (const line of text.split("\n")) {
    const match = SAMPLE.exec(line);
    if (!match) continue;
    const [, name, labelText = "", valueText = ""] = match;
    const value = Number(valueText);
    if (!Number.isFinite(value)) continue;
    const labels = Object.fromEntries(
      [...labelText.matchAll(LABEL)].map((m) => [m[1] ?? "", m[2] ?? ""]),
    );
    switch (name) {
      case "sluice_connections_rejected_total":
        add(counters.rejected, labels.reason, value);
        break;
      case "sluice_protocol_errors_total":
        add(counters.protocolErrors, labels.reason, value);
        break;
      case "sluice_dropped_messages_total":
        add(counters.dropped, labels.reason, value);
        break;
      case "sluice_publish_throttled_total":
        counters.throttled += value;
        break;
      case "sluice_messages_received_total":
        counters.messagesReceived += value;
        break;
      case "sluice_connections":
        counters.openConnections += value;
        break;
      case "nodejs_eventloop_lag_max_seconds":
        counters.eventLoopDelayMaxMs = value * 1000;
        break;
      case "sluice_redis_subscription_resets_total":
        counters.redisSubscriptionResets = (counters.redisSubscriptionResets ?? 0) + value;
        break;
      case "sluice_cluster_backpressure_seconds_total":
        counters.backpressureSeconds += value;
        break;
      case "sluice_cluster_subscription_paused_seconds_total":
        counters.subscriptionPausedSeconds += value;
        break;
    }
  }
  return counters;
}

function add(into: Record<string, number>, key: string | undefined, value: number): void {
  const name = key ?? "";
  into[name] = (into[name] ?? 0) + value;
}

/** A node's /metrics text. */
async function metricsText(httpPort: number): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${httpPort}/metrics`, {
    signal: AbortSignal.timeout(5_000),
  });
  if (!response.ok) throw new Error(`/metrics answered ${response.status}`);
  return response.text();
}

export async function readSluiceCounters(httpPort: number): Promise<SluiceCounters> {
  return parseSluiceCounters(await metricsText(httpPort));
}

/** What the counters grew by between two readings (gauges: the later reading). */
export function countersSince(before: SluiceCounters, after: SluiceCounters): SluiceCounters {
  const since = (a: Record<string, number>, b: Record<string, number>): Record<string, number> =>
    Object.fromEntries(Object.entries(b).map(([key, value]) => [key, value - (a[key] ?? 0)]));
  return {
    rejected: since(before.rejected, after.rejected),
    protocolErrors: since(before.protocolErrors, after.protocolErrors),
    dropped: since(before.dropped, after.dropped),
    throttled: after.throttled - before.throttled,
    messagesReceived: after.messagesReceived - before.messagesReceived,
    openConnections: after.openConnections,
    eventLoopDelayMaxMs: after.eventLoopDelayMaxMs,
    redisSubscriptionResets:
      after.redisSubscriptionResets === null
        ? null
        : after.redisSubscriptionResets - (before.redisSubscriptionResets ?? 0),
    backpressureSeconds: after.backpressureSeconds - before.backpressureSeconds,
    subscriptionPausedSeconds: after.subscriptionPausedSeconds - before.subscriptionPausedSeconds,
  };
}

/**
 * Waits until the node holds no client connection (bounded): between the flood scenario's
 * phases, so that a phase starts on a node the previous one has left.
 */
export async function noConnectionsLeft(httpPort: number, timeoutMs: number): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const { openConnections } = await readSluiceCounters(httpPort);
    if (openConnections === 0 || performance.now() > deadline) return openConnections;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The node's longest event-loop delay since the previous scrape (see eventLoopDelayMaxMs). */
export const LOOP_LAG_MAX = "nodejs_eventloop_lag_max_seconds";

/**
 * A node's shared-subscription series (sluice_shared_*), keyed `<name>|<group>` or
 * `<name>|<group>|<reason>` (a group's series go when it ends, so a reader keeps the last
 * value of each key it saw), and its longest event-loop delay since the last scrape
 * (`nodejs_eventloop_lag_max_seconds|`).
 */
export function parseSharedSeries(text: string): Map<string, number> {
  const series = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line.startsWith("sluice_shared_") && !line.startsWith(LOOP_LAG_MAX)) continue;
    const match = SAMPLE.exec(line);
    if (!match) continue;
    const [, name = "", labelText = "", valueText = ""] = match;
    const value = Number(valueText);
    if (!Number.isFinite(value)) continue;
    const labels = Object.fromEntries(
      [...labelText.matchAll(LABEL)].map((m) => [m[1] ?? "", m[2] ?? ""]),
    );
    const key = [name, labels.group ?? "", ...(labels.reason ? [labels.reason] : [])].join("|");
    series.set(key, value);
  }
  return series;
}

export async function readSharedSeries(httpPort: number): Promise<Map<string, number>> {
  return parseSharedSeries(await metricsText(httpPort));
}
