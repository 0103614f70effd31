import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  MemberPicker,
  type MemberView,
  strategyResolver,
} from "../../src/shared-subscriptions/member-picker.js";
import { groupName, parseSharedFilter } from "../../src/shared-subscriptions/shared-filter.js";

const MEMBERS: MemberView[] = [
  { clientId: "a", nodeId: "n1" },
  { clientId: "b", nodeId: "n2" },
  { clientId: "c", nodeId: "n2" },
];

function picks(picker: MemberPicker, topics: string[], publisherId?: string): string[] {
  return topics.map((topic) => picker.pick(MEMBERS, { topic, publisherId })?.clientId ?? "-");
}

describe("shared filters", () => {
  it("split $share/{group}/{filter}, and say why a malformed one is refused", () => {
    assert.deepEqual(parseSharedFilter("$share/g/plant/+/temp"), {
      group: "g",
      filter: "plant/+/temp",
    });
    assert.equal(groupName({ group: "g", filter: "a/#" }), "g/a/#");
    for (const bad of [
      "$share/g",
      "$share//a",
      "$share/g+/a",
      "$share/g#/a",
      "$share/g/a/#/b",
      "$share/g/",
    ]) {
      assert.ok("invalid" in parseSharedFilter(bad), bad);
    }
  });
});

describe("member picking", () => {
  const topics = Array.from({ length: 9 }, (_, i) => `t/${i}`);

  it("round_robin takes each member in turn", () => {
    assert.deepEqual(picks(new MemberPicker("round_robin", "n1"), topics), [..."abcabcabc"]);
  });

  it("local_first takes this node's members while there are any", () => {
    assert.deepEqual(picks(new MemberPicker("local_first", "n2"), topics.slice(0, 4)), [..."bcbc"]);
    assert.deepEqual(picks(new MemberPicker("local_first", "n9"), topics.slice(0, 3)), [..."abc"]);
  });

  it("hash_topic sends a topic to one member, the same on every node", () => {
    const one = picks(new MemberPicker("hash_topic", "n1"), [...topics, ...topics]);
    const other = picks(new MemberPicker("hash_topic", "n2"), topics);
    assert.deepEqual(one.slice(0, 9), one.slice(9));
    assert.deepEqual(one.slice(0, 9), other);
    assert.ok(new Set(one).size > 1, "topics spread over members");
  });

  it("hash_clientid sends a publisher to one member", () => {
    const picker = new MemberPicker("hash_clientid", "n1");
    const byPublisher = ["p1", "p2", "p3", "p4", "p5", "p6"].map((p) => picks(picker, topics, p));
    for (const list of byPublisher) assert.equal(new Set(list).size, 1);
    assert.ok(new Set(byPublisher.map((l) => l[0])).size > 1, "publishers spread over members");
  });

  it("sticky keeps a member until it is gone", () => {
    const picker = new MemberPicker("sticky", "n1");
    const first = picks(picker, topics);
    assert.equal(new Set(first).size, 1);
    const stuck = first[0] as string;
    const rest = MEMBERS.filter((m) => m.clientId !== stuck);
    const after = topics.map(
      (topic) => picker.pick(rest, { topic, publisherId: undefined })?.clientId,
    );
    assert.equal(new Set(after).size, 1);
    assert.notEqual(after[0], stuck);
  });

  it("random picks among the members", () => {
    const picker = new MemberPicker("random", "n1");
    const seen = new Set(
      Array.from(
        { length: 200 },
        () => picker.pick(MEMBERS, { topic: "t", publisherId: undefined })?.clientId,
      ),
    );
    assert.deepEqual([...seen].sort(), ["a", "b", "c"]);
  });

  it("no members: no pick", () => {
    assert.equal(
      new MemberPicker("round_robin", "n1").pick([], { topic: "t", publisherId: undefined }),
      undefined,
    );
  });

  it("a group's strategy is the first matching pattern's, else the default", () => {
    const strategyOf = strategyResolver({
      strategy: "round_robin",
      groups: [
        { match: "historian-*", strategy: "hash_topic" },
        { match: "scada.1", strategy: "sticky" },
      ],
    });
    assert.equal(strategyOf("historian-east"), "hash_topic");
    assert.equal(strategyOf("scada.1"), "sticky");
    assert.equal(strategyOf("scadax1"), "round_robin", "a dot is a dot");
    assert.equal(strategyOf("other"), "round_robin");
  });
});
