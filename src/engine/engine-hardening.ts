import type { Aedes, Client } from "aedes";

/**
 * Protections aedes 1.2.0 has and 2.0.0-beta.1 (branched before them) lacks, where no patch is
 * needed: applied to the broker once it is built and to each client as aedes makes it. The ones
 * inside aedes' handlers and close() are in patches/ (the inbound QoS 2 bound, a clean session's
 * QoS 2 ids wiped at CONNECT and at close, the SUBSCRIBE dedupe, PUBREL's rejection).
 */

interface HardenedBroker {
  clients: Record<string, Client>;
  brokers: Record<string, number>;
}

interface HardenedClient {
  subscriptions: Record<string, unknown>;
  duplicates: Record<string, number>;
}

/** A null-prototype copy: a key from the wire like `__proto__` or `constructor` reads as absent. */
function nullPrototype<T>(entries: Record<string, T>): Record<string, T> {
  return Object.assign(Object.create(null) as Record<string, T>, entries);
}

/**
 * GHSA-52qw-whmv-87c5: the broker's clients (by client id) and brokers (by node id) are keyed by
 * strings from the wire; with a plain object a client id `constructor` finds a "client" at once.
 */
export function hardenBroker(broker: Aedes): void {
  const internals = broker as unknown as HardenedBroker;
  internals.clients = nullPrototype(internals.clients);
  internals.brokers = nullPrototype(internals.brokers);
}

/**
 * For a client aedes just made, before it parses a packet: its subscriptions (by filter) get a
 * null prototype too (GHSA-52qw-whmv-87c5): a SUBSCRIBE to `constructor` found one already.
 */
export function hardenClient(client: Client): void {
  const internals = client as unknown as HardenedClient;
  internals.subscriptions = nullPrototype(internals.subscriptions);
  internals.duplicates = nullPrototype(internals.duplicates);
}
