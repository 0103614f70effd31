/**
 * Who publishes where and who subscribes to what: the topic patterns of a load run, and the
 * assignment of clients to broker URLs (so publishers and subscribers can sit on different
 * nodes of a cluster).
 */
export type TopicPattern = "pairwise" | "fan-in" | "fan-out" | "shared";

export const TOPIC_PATTERNS: readonly TopicPattern[] = ["pairwise", "fan-in", "fan-out", "shared"];

/** The shared group of the `shared` pattern (its filter follows). */
const SHARE_GROUP_PREFIX = "$share/bench/";

export interface LoadShape {
  publishers: number;
  subscribers: number;
  /**
   * pairwise: publisher i on its own topic, subscriber j on publisher (j mod N)'s topic;
   * fan-in: every publisher on its own topic, every subscriber on all of them (`+`);
   * fan-out: every publisher on one topic that every subscriber follows;
   * shared: every publisher on its own topic, every subscriber a member of one shared group
   * (`$share/bench/...+`), which as a whole should receive every message once.
   */
  pattern: TopicPattern;
}

export interface PublisherPlan {
  index: number;
  clientId: string;
  url: string;
  /** The loopback address the client's socket binds to; absent: the OS picks. */
  fromAddress?: string;
  topic: string;
}

export interface SubscriberPlan {
  index: number;
  clientId: string;
  url: string;
  /** The loopback address the client's socket binds to; absent: the OS picks. */
  fromAddress?: string;
  filter: string;
  /**
   * Indexes of the publishers whose every message this subscription should receive (with
   * `group`: the group as a whole, each message once).
   */
  expectsFrom: number[];
  /** The shared group the subscription is a member of: losses are counted over its members. */
  group?: string;
}

export interface ClientPlan {
  publishers: PublisherPlan[];
  subscribers: SubscriberPlan[];
}

/**
 * Local addresses for each side's sockets, dealt round robin like URLs: clients that come
 * from different hosts, as a broker with per-address connection quotas needs (127.0.0.0/8 is
 * all loopback on Linux).
 */
export interface ClientAddresses {
  publishers?: readonly string[];
  subscribers?: readonly string[];
}

/**
 * Plans the clients of one run. `runId` keeps topics and client ids of runs apart, so a late
 * message of a previous run on the same broker is never counted. URLs are dealt round robin.
 */
export function planClients(
  shape: LoadShape,
  runId: string,
  publisherUrls: readonly string[],
  subscriberUrls: readonly string[],
  addresses: ClientAddresses = {},
): ClientPlan {
  if (shape.publishers < 1 || shape.subscribers < 1)
    throw new RangeError("a load run needs at least one publisher and one subscriber");
  if (publisherUrls.length === 0 || subscriberUrls.length === 0)
    throw new RangeError("a load run needs at least one broker URL for each side");
  const base = `bench/${runId}`;
  const topicOf = (publisher: number): string => {
    switch (shape.pattern) {
      case "pairwise":
        return `${base}/p/${publisher}`;
      case "fan-in":
        return `${base}/in/${publisher}`;
      case "fan-out":
        return `${base}/out`;
      case "shared":
        return `${base}/sh/${publisher}`;
    }
  };
  const allPublishers = Array.from({ length: shape.publishers }, (_, i) => i);
  const publishers = allPublishers.map((index) => ({
    index,
    clientId: `bench-${runId}-p${index}`,
    url: pick(publisherUrls, index),
    ...fromAddress(addresses.publishers, index),
    topic: topicOf(index),
  }));
  const subscribers = Array.from({ length: shape.subscribers }, (_, index): SubscriberPlan => {
    const common = {
      index,
      clientId: `bench-${runId}-s${index}`,
      url: pick(subscriberUrls, index),
      ...fromAddress(addresses.subscribers, index),
    };
    switch (shape.pattern) {
      case "pairwise": {
        const source = index % shape.publishers;
        return { ...common, filter: topicOf(source), expectsFrom: [source] };
      }
      case "fan-in":
        return { ...common, filter: `${base}/in/+`, expectsFrom: allPublishers };
      case "fan-out":
        return { ...common, filter: `${base}/out`, expectsFrom: allPublishers };
      case "shared":
        return {
          ...common,
          filter: `${SHARE_GROUP_PREFIX}${base}/sh/+`,
          expectsFrom: allPublishers,
          group: SHARE_GROUP_PREFIX,
        };
      default:
        throw new RangeError(`unknown topic pattern: ${String(shape.pattern)}`);
    }
  });
  return { publishers, subscribers };
}

function pick(urls: readonly string[], index: number): string {
  const url = urls[index % urls.length];
  if (url === undefined) throw new RangeError("an empty list of URLs or addresses");
  return url;
}

function fromAddress(
  addresses: readonly string[] | undefined,
  index: number,
): { fromAddress?: string } {
  return addresses === undefined || addresses.length === 0
    ? {}
    : { fromAddress: pick(addresses, index) };
}

/** Splits clients over `processes` generator processes, round robin; no process left empty. */
export function splitAcross<T>(items: readonly T[], processes: number): T[][] {
  const count = Math.max(1, Math.min(processes, items.length));
  const groups: T[][] = Array.from({ length: count }, () => []);
  items.forEach((item, i) => {
    groups[i % count]?.push(item);
  });
  return groups;
}
