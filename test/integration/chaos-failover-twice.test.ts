import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { sentinelFailoverTwice } from "../../harness/chaos-matrix.js";
import { type ChaosReport, logReport, runChaos } from "../../harness/chaos-scenario.js";
import { tally } from "../../harness/history.js";

/**
 * Issue 17, a second Sentinel failover a second after the first, under the chaos workload with
 * four shared-group members: the last replica is promoted and none is left to confirm writes.
 * Seen on its own on a loaded machine (the Sentinels missed the new primary's pings).
 *
 * Known loss (todo): Sentinel promotes the replica first and demotes the old primary later, and
 * the old one takes writes in between that the new one never gets. A QoS 2 message published
 * and confirmed just before reached a live persistent subscriber: its PUBLISH went out, the
 * subscriber PUBREC'd, and the session's records of it (the delivery, then the PUBREL, neither
 * confirmed by a replica before the packet goes out) were written to the old primary only. The
 * resumed session on the new one knows nothing of it and never sends the PUBREL, which MQTT.js
 * waits for before it hands a QoS 2 message over: lost, though its publisher had its PUBREC.
 * Closing it needs a live persistent subscriber's copy to be durable before the publisher's
 * acknowledgement, as an offline session's queued copy is.
 */
function broken(report: ChaosReport): ReturnType<typeof tally> {
  return tally(report.violations);
}

describe("chaos: two Sentinel failovers", () => {
  it(
    "the primary killed, then the promoted one failed over too: nothing acknowledged is lost",
    {
      todo: "a live persistent subscriber's QoS 2 delivery records are lost with the demoted primary",
    },
    async () => {
      const report = await runChaos({
        ...sentinelFailoverTwice(),
        workload: { sharedMembers: 4 },
      });
      logReport(report);
      const lost = broken(report);
      assert.equal(lost["no-loss"], undefined, JSON.stringify(lost));
      assert.equal(lost["shared-stranded"], undefined, JSON.stringify(lost));
      assert.ok(report.summary.acked > 0);
    },
  );
});
