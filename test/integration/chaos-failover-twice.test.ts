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
 * Known loss (todo): 1 or 2 acknowledged QoS 2 messages missing at a persistent subscriber or
 * a group, or a QoS 2 message twice, in 2 of 3 runs (and on b910041). Sentinel promotes the
 * replica first and demotes the old primary later; the old one takes writes in between that the
 * new one never gets (subscribers' delivery and PUBREL records, group acknowledgements), and
 * confirmations there fail. What this test found and is mended: a confirmation in flight when
 * its connection reconnected at once was never answered (ioredis drops such commands), and
 * every later acknowledgement of the node waited behind it (replica-acks.test.ts).
 */
function broken(report: ChaosReport): ReturnType<typeof tally> {
  return tally(report.violations);
}

describe("chaos: two Sentinel failovers", () => {
  it(
    "the primary killed, then the promoted one failed over too: nothing acknowledged is lost",
    {
      todo: "writes the old primary took after the promotion: QoS 2 messages lost or twice",
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
