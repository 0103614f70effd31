import type { Aedes, Client } from "aedes";
import {
  broadcastFrom,
  countLiveSubscriptions,
  liveBrokerCount,
  registeredClient,
} from "./aedes-internals.js";

/**
 * The node's broker, once built. aedes takes its hooks at construction, and some of what the
 * hooks use (the device registry, ownership, the session directory) must reach the broker
 * later: they hold this slot, filled once, instead of closures over a node's fields.
 */
export class BrokerSlot {
  private broker: Aedes | undefined;
  private departures: { readonly pending: number } | undefined;

  fill(broker: Aedes): void {
    if (this.broker !== undefined) throw new Error("the broker slot is filled once");
    this.broker = broker;
  }

  get current(): Aedes | undefined {
    return this.broker;
  }

  /** The client connected on this node with this id, if any. */
  client(clientId: string): Client | undefined {
    return this.broker === undefined ? undefined : registeredClient(this.broker, clientId);
  }

  /** Subscriptions held by the clients connected here (0 before the broker exists). */
  /** Subscriptions of departed clients still to be removed count too (DeparturePacer). */
  subscriptionCount(): number {
    const departing = this.departures?.pending ?? 0;
    return this.broker === undefined ? departing : countLiveSubscriptions(this.broker) + departing;
  }

  trackDepartures(departures: { readonly pending: number }): void {
    this.departures = departures;
  }

  /** Live nodes of the cluster, this one included (1 before the broker exists, or alone). */
  liveNodes(heartbeatMs: number): number {
    return this.broker === undefined ? 1 : liveBrokerCount(this.broker, heartbeatMs);
  }

  /** A QoS 0 message to every node (this one included) over the cluster's pub/sub. */
  broadcast(topic: string, payload: Buffer): void {
    if (this.broker !== undefined) broadcastFrom(this.broker, topic, payload);
  }
}
