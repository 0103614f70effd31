import type { Client } from "aedes";

/**
 * The edge nodes online on this node: connected here, with an NBIRTH since they connected and
 * no NDEATH. Summed over the nodes (each counts only its own connections) it is the cluster's.
 */
export class EdgeNodeCensus {
  private readonly online = new Map<Client, string>();

  constructor(private readonly onChange: (groupLabel: string, change: 1 | -1) => void) {}

  /** An NBIRTH from `client`: online in the group labelled `groupLabel` (a rebirth changes nothing). */
  born(client: Client, groupLabel: string): void {
    const before = this.online.get(client);
    if (before === groupLabel) return;
    if (before !== undefined) this.onChange(before, -1);
    this.online.set(client, groupLabel);
    this.onChange(groupLabel, 1);
  }

  /** An NDEATH of `client`'s, or its connection ended. */
  gone(client: Client): void {
    const label = this.online.get(client);
    if (label === undefined) return;
    this.online.delete(client);
    this.onChange(label, -1);
  }
}
