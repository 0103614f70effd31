import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, end } from "../../harness/mqtt-client.js";

/**
 * `limits.maxKeepaliveSeconds`: a connection without keep-alive is never timed out, so a
 * client could hold its per-address quota with silent sockets forever.
 */
let node: RunningNode;

before(async () => {
  node = await startNode({ limits: { maxKeepaliveSeconds: 60 } });
});
after(async () => {
  await node?.stop();
});

describe("keep-alive limit", () => {
  it("refuses keep-alive 0 and keep-alives over the limit with CONNACK 2, takes the rest", async () => {
    const url = node.urls.tcp as string;
    await assert.rejects(connect(url, { keepalive: 0 }), /Identifier rejected/);
    await assert.rejects(connect(url, { keepalive: 61 }), /Identifier rejected/);
    await end(await connect(url, { keepalive: 60 }));
    await end(await connect(url, { keepalive: 1 }));
    const metrics = await fetch(`${node.httpUrl}/metrics`).then((r) => r.text());
    assert.match(metrics, /sluice_connections_rejected_total\{reason="keepalive"[^}]*\} 2/);
  });
});
