/** The parts of qlobber (no types of its own) that Sluice's persistence uses. */
declare module "qlobber" {
  export interface QlobberOptions {
    separator: string;
    wildcard_one: string;
    wildcard_some: string;
    /** `a/+` matches `a/` ([MQTT-4.7.1-3]: `+` matches one level, and a level may be empty). */
    match_empty_levels: boolean;
  }
  /** A set of topic filters that says whether a topic matches any of them. */
  export class QlobberTrue {
    constructor(options: QlobberOptions);
    add(filter: string): this;
    test(topic: string): boolean;
  }
}

declare module "qlobber/aedes/qlobber-sub.js" {
  import type { QlobberOptions } from "qlobber";
  /** What a subscription trie entry holds; `topic` is the filter. */
  export interface TrieSubscription {
    clientId: string;
    topic: string;
    qos: number;
    rh?: number | undefined;
    rap?: boolean | undefined;
    nl?: boolean | undefined;
  }
  /** aedes' subscription trie: filter -> the clients subscribed with it. */
  export default class QlobberSub {
    constructor(options: QlobberOptions);
    readonly subscriptionsCount: number;
    add(filter: string, subscription: TrieSubscription): void;
    remove(filter: string, subscription: { clientId: string; topic: string }): void;
    match(topic: string): TrieSubscription[];
  }
}
