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
 * Known loss (todo): 1 acknowledged QoS 2 message missing at a persistent subscriber in 1 of
 * 10 runs, and a QoS 2 message twice in 2 of 10 (before the mends below: lost in 2 of 3 runs,
 * on b910041 too). Sentinel promotes the replica first and demotes the old primary later; the
 * old one takes writes in between that the new one never gets, and confirmations there fail.
 * Mended from what this test found: a confirmation in flight when its connection reconnected at
 * once was never answered (ioredis drops such commands) and every later acknowledgement of the
 * node waited behind it; a PUBREL went out though its record's confirmation had failed; a
 * PUBREL record lost its message's origin (replica-acks.test.ts, pubrel-origin.test.ts).
 */
function broken(report: ChaosReport): ReturnType<typeof tally> {
  return tally(report.violations);
}

describe("chaos: two Sentinel failovers", () => {
  it(
    "the primary killed, then the promoted one failed over too: nothing acknowledged is lost",
    {
      todo: "writes the old primary took after the promotion: a QoS 2 message lost or twice, now and then",
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
