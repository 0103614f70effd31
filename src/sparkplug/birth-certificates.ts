import type { Aedes } from "aedes";
import { publishRetained, retainedTopics } from "../engine/aedes-internals.js";
import { certificateTopic, deviceCertificatesOf } from "./sparkplug-topic.js";

export type Birth =
  | { kind: "node"; group: string; edge: string }
  | { kind: "device"; group: string; edge: string; device: string };

const CLEARED = Buffer.alloc(0);

/**
 * Sparkplug Aware (tck-id-conformance-mqtt-aware-store, -nbirth-mqtt-topic/-retain,
 * -dbirth-mqtt-topic/-retain): every birth this node receives is republished retained on its
 * `$sparkplug/certificates/` topic. The retained store is the cluster's, so the certificate is
 * kept once, by the node the edge node is connected to, and every node serves it. An NBIRTH
 * first clears the edge node's DBIRTH certificates (its DBIRTHs follow and replace them), so a
 * device the edge node no longer reports leaves no certificate behind.
 */
export class BirthCertificates {
  /** Per edge node, the work still running: its births are stored in the order they came. */
  private readonly pending = new Map<string, Promise<void>>();

  constructor(
    private readonly broker: Aedes,
    private readonly onFailed: (error: unknown) => void,
  ) {}

  received(birth: Birth, payload: Buffer): void {
    const key = `${birth.group}/${birth.edge}`;
    const before = this.pending.get(key) ?? Promise.resolve();
    const stored = before.then(() => this.store(birth, payload)).catch(this.onFailed);
    this.pending.set(key, stored);
    void stored.then(() => {
      if (this.pending.get(key) === stored) this.pending.delete(key);
    });
  }

  private async store(birth: Birth, payload: Buffer): Promise<void> {
    if (birth.kind === "node") {
      const stale = await retainedTopics(
        this.broker,
        deviceCertificatesOf(birth.group, birth.edge),
      );
      await Promise.all(stale.map((topic) => publishRetained(this.broker, topic, CLEARED)));
    }
    await publishRetained(this.broker, certificateTopic(birth), payload);
  }
}
