import type { Client } from "aedes";
import type { Logger } from "../observability/logger.js";
import type { OwnedConnection, RedisSessionRegistry } from "./session-registry.js";

/** The topic a node listens on for takeovers of its connections. */
export function takeoverTopic(nodeId: string): string {
  return `$SYS/sluice/takeover/${nodeId}`;
}

/** What ownership needs from the engine, kept narrow so it can be reasoned about alone. */
export interface OwnershipEngine {
  /** Sends a takeover message to another node (over the cluster's pub/sub), via a client's broker. */
  publish(via: Client, topic: string, payload: Buffer): void;
  /** Closes a connection that lost its client id to a newer one. */
  close(client: Client): void;
}

interface Held extends OwnedConnection {
  readonly client: Client;
  /** A newer connection elsewhere owns the id; close this one as soon as aedes registers it. */
  superseded: boolean;
}

export type SupersedeCause = "takeover" | "local" | "late" | "reconcile";

/** Owner entries per reconcile script: small enough to keep Redis responsive. */
const RECONCILE_BATCH = 500;

/**
 * Explicit client-id ownership across the cluster, in place of aedes' unfenced takeover gossip.
 * Each accepted CONNECT claims its id in Redis with a new epoch (RedisSessionRegistry); the
 * node that owned the id before is told, and closes its connection only if that connection's
 * epoch is older, so a late or repeated message can never close the newer connection. A
 * message lost while this node's Redis subscription was down is caught up by `reconcile()`,
 * run whenever Redis comes back: every connection held here is checked against Redis.
 */
export class ClientOwnership {
  /** Per client id, the newest connection claimed here. */
  private readonly held = new Map<string, Held>();
  /** Connections aedes registered (CONNACK sent or being sent), whether it still lists them. */
  private readonly registeredClients = new WeakSet<Client>();
  /** Releases that failed while Redis was down, retried on the next reconcile. */
  private readonly pendingReleases = new Map<string, number>();

  constructor(
    private readonly registry: RedisSessionRegistry,
    private readonly engine: OwnershipEngine,
    private readonly log: Logger,
    /** Each connection closed for a newer one of its id, by how this node learned of it. */
    private readonly onConflict: (cause: SupersedeCause) => void = () => {},
  ) {}

  /**
   * A CONNECT claimed its id with this epoch; an older connection of the id here is closed (now
   * if registered, else instead of registering), and the node it displaced, if any, is told.
   */
  claimed(client: Client, owned: OwnedConnection, displacedNode: string | undefined): void {
    const older = this.held.get(owned.clientId);
    // Written out, not `{ ...owned, client }`: keys added after a spread take V8's slow path.
    const { clientId, epoch, username } = owned;
    this.held.set(clientId, { clientId, epoch, username, client, superseded: false });
    // aedes closes the connection it lists under the id when the new one registers, but CONNECTs
    // of one id that register concurrently, or out of claim order, left older ones open.
    if (older !== undefined && older.client !== client) this.supersede(older, "local");
    if (displacedNode !== undefined) {
      this.engine.publish(
        client,
        takeoverTopic(displacedNode),
        Buffer.from(`${owned.epoch}|${owned.clientId}`, "utf8"),
      );
    }
  }

  /**
   * Whether aedes may register this connection, which closes the one it lists under the id:
   * only the newest claim of the id, not taken over meanwhile. [MQTT-3.1.4-2] is for a newer
   * connection; an older one registering late would close the newer.
   */
  mayRegister(client: Client): boolean {
    const held = this.held.get(client.id);
    return held?.client === client && !held.superseded;
  }

  /** aedes registered the client: close it now if it was taken over while connecting. */
  registered(client: Client): void {
    this.registeredClients.add(client);
    const held = this.held.get(client.id);
    if (held?.client !== client) this.close(client, "late");
    else if (held.superseded) this.supersede(held, "late");
  }

  /** The connection ended: drop its owner entry unless a newer connection holds the id. */
  ended(client: Client): void {
    const held = this.held.get(client.id);
    if (held?.client !== client) return;
    this.held.delete(client.id);
    this.registry.release(held.clientId, held.epoch).catch(() => {
      this.pendingReleases.set(held.clientId, held.epoch);
    });
  }

  /** A takeover message for this node: "epoch|client id". Malformed ones are ignored. */
  takeoverReceived(payload: Buffer): void {
    const text = payload.toString("utf8");
    const separator = text.indexOf("|");
    const epoch = Number(text.slice(0, separator));
    if (separator <= 0 || !Number.isSafeInteger(epoch)) return;
    const held = this.held.get(text.slice(separator + 1));
    if (held === undefined || held.epoch >= epoch) return;
    this.supersede(held, "takeover");
  }

  /**
   * Catches up on takeovers missed while Redis was unreachable, and retries owner entries that
   * could not be released then.
   */
  async reconcile(): Promise<void> {
    for (const [clientId, epoch] of [...this.pendingReleases]) {
      await this.registry.release(clientId, epoch);
      this.pendingReleases.delete(clientId);
    }
    const all = [...this.held.values()];
    let closed = 0;
    for (let start = 0; start < all.length; start += RECONCILE_BATCH) {
      const batch = all.slice(start, start + RECONCILE_BATCH);
      for (const clientId of await this.registry.takenOver(batch)) {
        const held = this.held.get(clientId);
        // Only the connection that was checked: a newer one may have claimed meanwhile.
        if (held !== undefined && batch.includes(held)) {
          this.supersede(held, "reconcile");
          closed++;
        }
      }
    }
    this.log.info(
      { event: "ownership.reconciled", checked: all.length, closed },
      "client ownership checked against Redis",
    );
  }

  private supersede(held: Held, cause: SupersedeCause): void {
    held.superseded = true;
    if (this.registeredClients.has(held.client)) this.close(held.client, cause);
  }

  private close(client: Client, cause: SupersedeCause): void {
    this.onConflict(cause);
    this.log.debug(
      { event: "client.taken_over", clientId: client.id, cause },
      "client id taken over by a newer connection",
    );
    this.engine.close(client);
  }
}
