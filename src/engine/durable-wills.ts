import type { Aedes, Client, PublishPacket } from "aedes";
import type { Logger } from "../observability/logger.js";
import { registeredClient } from "./aedes-internals.js";
import { UnforwardedError } from "./local-first.js";

/** The broker methods this replaces, and those it calls (aedes.js). */
interface WillMethods {
  closed: boolean;
  publishWill(client: Client, will: PublishPacket): void;
  authorizePublish(
    client: Client | null,
    packet: PublishPacket,
    callback: (error?: Error | null) => void,
  ): void;
  publish(packet: PublishPacket, client: Client, callback: (error?: Error) => void): void;
}

/** What it needs of the persistence: this node's stored will of a client. */
export interface DurableWillStore {
  getWill(client: { id: string }): Promise<unknown>;
  delWill(client: { id: string; brokerId: string }): Promise<unknown>;
}

export interface DurableWillsDeps {
  store: DurableWillStore;
  /**
   * In a cluster: the will's claim (WillClaims.claim), taken before a will goes out late, since
   * survivors may have published this node's stored wills while it was away (lease gone).
   */
  claim?(brokerId: string, clientId: string): Promise<boolean>;
  log: Logger;
  /** Delay before the first retry, doubled each time up to `maxRetryMs`. */
  firstRetryMs?: number;
  maxRetryMs?: number;
}

/** A will whose PUBLISH failed: still stored, published again later. */
interface PendingWill {
  client: Client;
  will: PublishPacket;
  attempts: number;
  /** Published; only the stored copy is left to delete. */
  published: boolean;
  /**
   * Sends it on to the other nodes alone, when the failed attempt reached this node's
   * subscribers and the stored queues (its PUBLISH to Redis failed): published again whole,
   * those would have it twice.
   */
  forward?: () => Promise<unknown>;
}

const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 5_000;

/**
 * aedes' publishWill deletes the stored will once its PUBLISH is done, whether it failed or not:
 * a client lost while Redis was away (a Sentinel failover: ack-after-durable refuses the
 * PUBLISH) never had its will published. Here the will is deleted only once its PUBLISH is
 * durable. If it fails, the will stays stored and this node publishes it again, backing off,
 * until Redis takes it; if this node dies meanwhile, the survivors' dead-node sweep does.
 *
 * Exactly once: a late attempt takes the will's claim first (the survivors' key), and publishes
 * only while the will is still stored (a survivor that took it deleted it). A newer connection
 * of the id registered here replaced the stored will at its CONNECT (aedes' storeWill): the
 * pending one is then published from memory and the stored one, the new connection's, kept.
 *
 * Once per subscriber: a failed attempt that got as far as this node's subscribers and the
 * stored queues (its PUBLISH to Redis failed: local-first's UnforwardedError) is sent on to the
 * other nodes alone when retried, not published whole again.
 */
export class DurableWills {
  private readonly pending = new Set<PendingWill>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly firstRetryMs: number;
  private readonly maxRetryMs: number;

  constructor(
    private readonly broker: Aedes,
    private readonly deps: DurableWillsDeps,
  ) {
    this.firstRetryMs = deps.firstRetryMs ?? FIRST_RETRY_MS;
    this.maxRetryMs = deps.maxRetryMs ?? MAX_RETRY_MS;
  }

  /** Wills waiting for a PUBLISH that Redis takes. */
  get waiting(): number {
    return this.pending.size;
  }

  /** Replaces the broker's publishWill (before anything wraps it). */
  install(): void {
    const methods = this.broker as unknown as WillMethods;
    methods.publishWill = (client, will) => {
      methods.authorizePublish(client, will, (refusal) => {
        if (refusal) {
          this.forget(client, will, 0);
          return;
        }
        methods.publish(will, client, (error) => {
          if (error === undefined || error === null) this.forget(client, will, 0);
          else {
            const pending: PendingWill = { client, will, attempts: 0, published: false };
            if (error instanceof UnforwardedError) pending.forward = error.forward;
            this.keep(pending, error);
          }
        });
      });
    };
    this.broker.once("closed", () => {
      for (const timer of this.timers) clearTimeout(timer);
      this.timers.clear();
    });
  }

  /** Deletes the stored will; a failed delete is retried (the will must not go out twice). */
  private forget(client: Client, will: PublishPacket, attempts: number): void {
    this.deps.store.delWill({ id: client.id, brokerId: this.broker.id }).then(
      () => {},
      (error: unknown) => this.keep({ client, will, attempts, published: true }, error),
    );
  }

  private keep(pending: PendingWill, error: unknown): void {
    if (!this.pending.has(pending)) {
      this.pending.add(pending);
      this.deps.log.warn(
        { event: "client.will_deferred", clientId: pending.client.id, err: error },
        "will not published (Redis did not take it): kept, published again later",
      );
    }
    this.retryLater(pending);
  }

  private retryLater(pending: PendingWill): void {
    if ((this.broker as unknown as WillMethods).closed) {
      // Stays stored: the survivors publish it once this node's lease is gone.
      this.pending.delete(pending);
      return;
    }
    const delay = Math.min(this.firstRetryMs * 2 ** pending.attempts, this.maxRetryMs);
    pending.attempts++;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      this.retry(pending).catch(() => this.retryLater(pending));
    }, delay);
    timer.unref();
    this.timers.add(timer);
  }

  private async retry(pending: PendingWill): Promise<void> {
    const { client, will } = pending;
    const clientId = client.id;
    const brokerId = this.broker.id;
    // A newer connection of the id here: the stored will is its own.
    const replaced = registeredClient(this.broker, clientId) !== undefined;
    if (!pending.published) {
      const { claim, store } = this.deps;
      if (claim !== undefined && !(await claim(brokerId, clientId))) {
        // Claimed elsewhere: published and deleted there, or free again after the claim's TTL.
        this.retryLater(pending);
        return;
      }
      if (!replaced && !(await store.getWill({ id: clientId }))) {
        this.pending.delete(pending);
        this.deps.log.info(
          { event: "client.will_taken_elsewhere", clientId },
          "a kept will was published by another node",
        );
        return;
      }
      if (pending.forward) await pending.forward();
      else await this.publish(will, client);
      pending.published = true;
      this.deps.log.info(
        { event: "client.will_published_late", clientId, attempts: pending.attempts },
        "kept will published",
      );
    }
    if (!replaced) await this.deps.store.delWill({ id: clientId, brokerId });
    this.pending.delete(pending);
  }

  private publish(will: PublishPacket, client: Client): Promise<void> {
    const methods = this.broker as unknown as WillMethods;
    return new Promise((resolve, reject) =>
      methods.publish(will, client, (error) => (error ? reject(error) : resolve())),
    );
  }
}
