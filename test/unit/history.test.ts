import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { History, payloadOf, type Violation } from "../../harness/history.js";

/** A clean run: one publisher, one QoS 1 and one QoS 2 subscriber, everything delivered once. */
function cleanRun(): History {
  const history = new History();
  history.subscribed("sub1", "t", 1);
  history.subscribed("sub2", "t", 2);
  for (let seq = 0; seq < 3; seq++) {
    history.sent("pub", "t", seq, 2);
    history.acked("pub", "t", seq);
    history.received("sub1", "t", payloadOf("pub", seq), 1);
    history.received("sub2", "t", payloadOf("pub", seq), 2);
  }
  history.expectWill("kept", "never");
  history.expectWill("killed", "once");
  history.willPublished("killed");
  history.liveConnections("sub1", 1);
  history.retained("node-a", "r", "v1");
  history.retained("node-b", "r", "v1");
  return history;
}

function properties(violations: Violation[]): string[] {
  return violations.map((v) => v.property);
}

describe("history checker", () => {
  it("a clean run breaks nothing", () => {
    assert.deepEqual(cleanRun().check(), []);
    assert.deepEqual(cleanRun().summary(), {
      sent: 3,
      acked: 3,
      delivered: 6,
      duplicates: 0,
      qos0Lost: 0,
      lostAcknowledged: 0,
      shared: { delivered: 0, redelivered: 0, sameMemberDuplicates: 0, stranded: 0, qos0Lost: 0 },
    });
  });

  it("no-loss: an acknowledged QoS 1 message a QoS 1 subscriber never got", () => {
    const history = cleanRun();
    history.sent("pub", "t", 3, 1);
    history.acked("pub", "t", 3);
    history.received("sub2", "t", payloadOf("pub", 3), 1);
    assert.deepEqual(properties(history.check()), ["no-loss"]);
    assert.match(history.check()[0]?.detail ?? "", /sub1 lost 1 acknowledged: pub:t#3/);
    assert.equal(history.summary().lostAcknowledged, 1);
  });

  it("no-loss: unacknowledged and QoS 0 messages may be lost (counted, not violations)", () => {
    const history = cleanRun();
    history.sent("pub", "t", 3, 1);
    history.sent("pub", "t", 4, 0);
    history.acked("pub", "t", 4);
    assert.deepEqual(history.check(), []);
    assert.equal(history.summary().qos0Lost, 2);
  });

  it("no-qos2-duplicates: a QoS 2 message delivered twice; a QoS 1 duplicate is allowed", () => {
    const history = cleanRun();
    history.received("sub1", "t", payloadOf("pub", 1), 1);
    assert.deepEqual(history.check(), []);
    assert.equal(history.summary().duplicates, 1);
    history.received("sub2", "t", payloadOf("pub", 1), 2);
    assert.deepEqual(properties(history.check()), ["no-qos2-duplicates"]);
  });

  it("order: a first delivery after a later message of the same publisher and topic", () => {
    const history = new History();
    history.subscribed("sub", "t", 1);
    for (const seq of [0, 1, 2]) {
      history.sent("pub", "t", seq, 1);
      history.acked("pub", "t", seq);
    }
    for (const seq of [0, 2, 1]) history.received("sub", "t", payloadOf("pub", seq), 1);
    assert.deepEqual(properties(history.check()), ["order"]);
    // A redelivery of an earlier message is a duplicate, not a reordering.
    const redelivered = new History();
    redelivered.subscribed("sub", "t", 1);
    for (const seq of [0, 1]) {
      redelivered.sent("pub", "t", seq, 1);
      redelivered.acked("pub", "t", seq);
    }
    for (const seq of [0, 1, 0, 1]) redelivered.received("sub", "t", payloadOf("pub", seq), 1);
    assert.deepEqual(redelivered.check(), []);
  });

  it("one-session-per-client-id: two live connections of one id after the heal", () => {
    const history = cleanRun();
    history.liveConnections("dup", 2);
    assert.deepEqual(properties(history.check()), ["one-session-per-client-id"]);
  });

  it("wills: twice for a lost connection, once for a kept one, twice for a server close", () => {
    const twice = cleanRun();
    twice.willPublished("killed");
    assert.deepEqual(properties(twice.check()), ["wills"]);
    const kept = cleanRun();
    kept.willPublished("kept");
    assert.deepEqual(properties(kept.check()), ["wills"]);
    const missing = cleanRun();
    missing.expectWill("killed-too", "once");
    assert.deepEqual(properties(missing.check()), ["wills"]);
    const fenced = cleanRun();
    fenced.expectWill("fenced", "at-most-once");
    assert.deepEqual(fenced.check(), []);
    fenced.willPublished("fenced");
    assert.deepEqual(fenced.check(), []);
    fenced.willPublished("fenced");
    assert.deepEqual(properties(fenced.check()), ["wills"]);
  });

  it("retained-converge: two nodes serving different retained payloads, or one none", () => {
    const differ = cleanRun();
    differ.retained("node-a", "r2", "x");
    differ.retained("node-b", "r2", "y");
    assert.deepEqual(properties(differ.check()), ["retained-converge"]);
    const absent = cleanRun();
    absent.retained("node-a", "r3", "x");
    absent.retained("node-b", "r3", undefined);
    assert.deepEqual(properties(absent.check()), ["retained-converge"]);
  });

  it("no-loss: from checkLossFrom on only (a fault that destroys what Redis held)", () => {
    const history = cleanRun();
    history.sent("pub", "t", 3, 1);
    history.acked("pub", "t", 3);
    history.checkLossFrom(Date.now() + 1);
    assert.deepEqual(history.check(), []);
    history.checkLossFrom(0);
    assert.deepEqual(properties(history.check()), ["no-loss", "no-loss"]);
  });

  it("refuses an acknowledgement of a message never sent (a broken test, not a broker fault)", () => {
    assert.throws(() => new History().acked("pub", "t", 0), /never sent/);
  });
});

/**
 * A clean shared run: members m1 (QoS 2) and m2 of group g on topic t; pub's QoS 1 messages
 * 0-1 and QoS 2 messages 2-3, each to one member; a plain subscriber sub beside them.
 */
function sharedRun(): History {
  const history = new History();
  history.subscribed("sub", "t", 2);
  history.shared.joined("g", "m1", ["t"], 2);
  history.shared.joined("g", "m2", ["t"], 2);
  for (let seq = 0; seq < 4; seq++) {
    const qos = seq < 2 ? 1 : 2;
    history.sent("pub", "t", seq, qos);
    history.acked("pub", "t", seq);
    history.received("sub", "t", payloadOf("pub", seq), qos);
    history.sharedReceived(seq % 2 === 0 ? "m1" : "m2", "t", payloadOf("pub", seq), qos);
  }
  history.shared.left("g", 0);
  return history;
}

describe("history checker: shared subscriptions", () => {
  it("a clean shared run breaks nothing; members are not held to no-loss as subscribers", () => {
    const history = sharedRun();
    assert.deepEqual(history.check(), []);
    assert.deepEqual(history.summary().shared, {
      delivered: 4,
      redelivered: 0,
      sameMemberDuplicates: 0,
      stranded: 0,
      qos0Lost: 0,
    });
  });

  it("shared-stranded: an acknowledged message no member got (QoS 0 and unacknowledged may be)", () => {
    const history = sharedRun();
    history.sent("pub", "t", 4, 0);
    history.sent("pub", "t", 5, 1);
    assert.deepEqual(
      history.check().filter((v) => v.property.startsWith("shared")),
      [],
    );
    assert.equal(history.summary().shared.qos0Lost, 1);
    history.sent("pub", "t", 6, 1);
    history.acked("pub", "t", 6);
    history.received("sub", "t", payloadOf("pub", 6), 1);
    assert.deepEqual(properties(history.check()), ["shared-stranded"]);
    assert.match(history.check()[0]?.detail ?? "", /g: 1 acknowledged reached no member: pub:t#6/);
    assert.equal(history.summary().shared.stranded, 1);
  });

  it("shared-stranded: entries left in Redis after the run settled", () => {
    const history = sharedRun();
    history.shared.left("g", 3);
    assert.deepEqual(properties(history.check()), ["shared-stranded"]);
    assert.equal(history.summary().shared.stranded, 3);
  });

  it("shared-one-member: two members got a message and neither lost its connection", () => {
    const history = sharedRun();
    history.sharedReceived("m2", "t", payloadOf("pub", 0), 1);
    assert.deepEqual(properties(history.check()), ["shared-one-member"]);
    assert.match(history.check()[0]?.detail ?? "", /pub:t#0 reached m1, m2 with no member/);
  });

  it("shared-one-member: a member's connection lost before the message was sent does not excuse it", () => {
    const history = new History();
    history.shared.joined("g", "m1", ["t"], 1);
    history.shared.joined("g", "m2", ["t"], 1);
    history.shared.disrupted("m1", Date.now() - 1_000);
    history.sent("pub", "t", 0, 1);
    history.acked("pub", "t", 0);
    history.sharedReceived("m1", "t", payloadOf("pub", 0), 1);
    history.sharedReceived("m2", "t", payloadOf("pub", 0), 1);
    assert.deepEqual(properties(history.check()), ["shared-one-member"]);
  });

  it("a member that lost its connection after a message: its copy at another member is a redelivery", () => {
    const history = sharedRun();
    history.shared.disrupted("m1");
    history.sharedReceived("m2", "t", payloadOf("pub", 0), 1);
    history.sharedReceived("m2", "t", payloadOf("pub", 2), 2);
    assert.deepEqual(history.check(), []);
    assert.equal(history.summary().shared.redelivered, 2);
    assert.equal(history.summary().shared.delivered, 6);
  });

  it("shared: messages sent before checkLossFrom are held to none of the three", () => {
    const history = sharedRun();
    history.sharedReceived("m2", "t", payloadOf("pub", 2), 2);
    history.sharedReceived("m1", "t", payloadOf("pub", 2), 2);
    history.sent("pub", "t", 4, 2);
    history.acked("pub", "t", 4);
    history.received("sub", "t", payloadOf("pub", 4), 2);
    assert.deepEqual(properties(history.check()).sort(), [
      "shared-one-member",
      "shared-qos2-once",
      "shared-stranded",
    ]);
    history.checkLossFrom(Date.now() + 1);
    assert.deepEqual(history.check(), []);
  });

  it("shared-qos2-once: a QoS 2 message twice to one member; QoS 1 twice is a duplicate", () => {
    const history = sharedRun();
    history.sharedReceived("m2", "t", payloadOf("pub", 1), 1);
    assert.deepEqual(history.check(), []);
    assert.equal(history.summary().shared.sameMemberDuplicates, 1);
    history.shared.disrupted("m1");
    history.sharedReceived("m1", "t", payloadOf("pub", 2), 2);
    assert.deepEqual(properties(history.check()), ["shared-qos2-once"]);
    assert.match(history.check()[0]?.detail ?? "", /g: m1 got QoS 2 pub:t#2 2 times/);
  });
});
