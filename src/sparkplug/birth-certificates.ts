import type { Aedes } from "aedes";
import { publishRetained, retainedTopics } from "../engine/aedes-internals.js";
import type { DeviceCertificateIndex } from "./device-certificate-index.js";
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
 * device the edge node no longer reports leaves no certificate behind: those the index of the
 * edge node's devices names, read exactly, so an NBIRTH costs the same however many retained
 * messages there are (a scan only where the index cannot tell, once per edge node).
 */
export class BirthCertificates {
  /** Per edge node, the work still running: its births are stored in the order they came. */
  private readonly pending = new Map<string, Promise<void>>();

  constructor(
    private readonly broker: Aedes,
    private readonly index: DeviceCertificateIndex,
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
    const { group, edge } = birth;
    if (birth.kind === "node") {
      const devices = await this.index.take(group, edge);
      const stale =
        devices === undefined
          ? await retainedTopics(this.broker, deviceCertificatesOf(group, edge))
          : devices.map((device) => certificateTopic({ kind: "device", group, edge, device }));
      await Promise.all(stale.map((topic) => publishRetained(this.broker, topic, CLEARED)));
    } else {
      // Before the certificate: at worst a later NBIRTH clears one that never came.
      await this.index.add(group, edge, birth.device);
    }
    await publishRetained(this.broker, certificateTopic(birth), payload);
  }
}
