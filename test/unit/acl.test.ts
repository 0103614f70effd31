import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError } from "../../src/errors.js";
import { Acl } from "../../src/security/acl.js";

const MOSQUITTO = `# anonymous clients may read public data
topic read public/#

# every device writes its own telemetry and reads its own commands
pattern write devices/%c/telemetry/#
pattern read devices/%c/cmd/#
pattern readwrite users/%u/#

user scada
topic read devices/+/telemetry/#
topic write devices/+/cmd/#
topic deny devices/+/telemetry/secret
topic read $SYS/#
`;

const YAML = `
anonymous:
  - { topic: "public/#", access: read }
patterns:
  - { topic: "devices/%c/telemetry/#", access: write }
  - { topic: "devices/%c/cmd/#", access: read }
  - { topic: "users/%u/#" }
users:
  scada:
    - { topic: "devices/+/telemetry/#", access: read }
    - { topic: "devices/+/cmd/#", access: write }
    - { topic: "devices/+/telemetry/secret", access: deny }
    - { topic: "$SYS/#", access: read }
`;

const device = (id: string) => ({ clientId: id, username: id });
const scada = { clientId: "scada-1", username: "scada" };
const anonymous = { clientId: "visitor", username: undefined };

/** [description, decision] pairs every form of the ACL must agree on. */
const CASES: Array<[string, (acl: Acl) => boolean, boolean]> = [
  [
    "a device publishes its own telemetry",
    (a) => a.canPublish(device("t1"), "devices/t1/telemetry/temp"),
    true,
  ],
  [
    "a device publishes another's telemetry",
    (a) => a.canPublish(device("t1"), "devices/t2/telemetry/temp"),
    false,
  ],
  ["a device reads its own commands", (a) => a.canRead(device("t1"), "devices/t1/cmd/set"), true],
  [
    "a device reads another's commands",
    (a) => a.canRead(device("t1"), "devices/t2/cmd/set"),
    false,
  ],
  ["a device publishes commands", (a) => a.canPublish(device("t1"), "devices/t1/cmd/set"), false],
  [
    "a device subscribes to its own commands",
    (a) => a.canSubscribe(device("t1"), "devices/t1/cmd/#"),
    true,
  ],
  ["a device subscribes to #", (a) => a.canSubscribe(device("t1"), "#"), false],
  ["a device subscribes to devices/#", (a) => a.canSubscribe(device("t1"), "devices/#"), false],
  [
    "a device subscribes to all commands",
    (a) => a.canSubscribe(device("t1"), "devices/+/cmd/#"),
    false,
  ],
  ["scada reads telemetry", (a) => a.canRead(scada, "devices/t1/telemetry/temp"), true],
  [
    "scada subscribes to all telemetry",
    (a) => a.canSubscribe(scada, "devices/+/telemetry/#"),
    true,
  ],
  [
    "scada subscribes to one device's telemetry",
    (a) => a.canSubscribe(scada, "devices/t1/telemetry/+"),
    true,
  ],
  ["scada subscribes to everything", (a) => a.canSubscribe(scada, "devices/#"), false],
  [
    "deny wins over the allow that also matches",
    (a) => a.canRead(scada, "devices/t1/telemetry/secret"),
    false,
  ],
  [
    "a subscription entirely denied is refused",
    (a) => a.canSubscribe(scada, "devices/t1/telemetry/secret"),
    false,
  ],
  ["scada writes commands", (a) => a.canPublish(scada, "devices/t9/cmd/open"), true],
  ["scada reads $SYS when granted explicitly", (a) => a.canRead(scada, "$SYS/broker/uptime"), true],
  ["anonymous reads public data", (a) => a.canRead(anonymous, "public/weather"), true],
  ["anonymous publishes public data", (a) => a.canPublish(anonymous, "public/weather"), false],
  ["anonymous gets no pattern with %u", (a) => a.canRead(anonymous, "users//x"), false],
  ["a named user gets %u patterns", (a) => a.canPublish(device("t1"), "users/t1/notes"), true],
  [
    "a user is not anonymous: no public rules",
    (a) => a.canRead(device("t1"), "public/weather"),
    false,
  ],
  [
    "client id # does not widen a pattern",
    (a) => a.canRead({ clientId: "#", username: "x" }, "devices/t2/cmd/set"),
    false,
  ],
  [
    "client id + does not widen a pattern",
    (a) => a.canPublish({ clientId: "+", username: "x" }, "devices/t2/telemetry/a"),
    false,
  ],
  [
    "client id with / does not reach another subtree",
    (a) => a.canRead({ clientId: "t2/cmd", username: "x" }, "devices/t2/cmd/cmd/x"),
    false,
  ],
  ["an unknown topic is denied", (a) => a.canRead(scada, "elsewhere/x"), false],
];

describe("ACL decisions (Mosquitto and YAML forms agree)", () => {
  const forms = {
    mosquitto: Acl.parse(MOSQUITTO, "mosquitto", "acl.conf"),
    yaml: Acl.parse(YAML, "yaml", "acl.yaml"),
  };
  for (const [description, decide, expected] of CASES) {
    it(`${description}: ${expected ? "allowed" : "denied"}`, () => {
      assert.equal(decide(forms.mosquitto), expected, "mosquitto form");
      assert.equal(decide(forms.yaml), expected, "yaml form");
    });
  }

  it("# in a rule does not match $SYS topics", () => {
    const acl = Acl.parse("user admin\ntopic read #\n", "mosquitto", "acl");
    assert.equal(acl.canRead({ clientId: "c", username: "admin" }, "$SYS/broker/load"), false);
    assert.equal(acl.canRead({ clientId: "c", username: "admin" }, "plant/a"), true);
  });

  it("a/# covers its parent a", () => {
    const acl = Acl.parse("user u\ntopic read a/#\n", "mosquitto", "acl");
    assert.equal(acl.canRead({ clientId: "c", username: "u" }, "a"), true);
  });

  it("an empty ACL denies everything", () => {
    const acl = Acl.parse("", "mosquitto", "acl");
    assert.equal(acl.canPublish(scada, "anything"), false);
    assert.equal(acl.ruleCount, 0);
  });
});

describe("ACL decision cache", () => {
  it("repeated decisions stay per identity: pattern rules, usernames, anonymous", () => {
    const acl = Acl.parse(MOSQUITTO, "mosquitto", "acl.conf");
    const pump = { clientId: "pump-1", username: "device" };
    const other = { clientId: "pump-2", username: "device" };
    for (let round = 0; round < 3; round++) {
      assert.equal(acl.canPublish(pump, "devices/pump-1/telemetry/level"), true);
      assert.equal(acl.canPublish(other, "devices/pump-1/telemetry/level"), false);
      assert.equal(acl.canRead({ clientId: "x", username: undefined }, "public/a"), true);
      assert.equal(acl.canRead({ clientId: "x", username: "" }, "public/a"), false);
      assert.equal(
        acl.canRead({ clientId: "x", username: "scada" }, "devices/p/telemetry/secret"),
        false,
      );
      assert.equal(
        acl.canRead({ clientId: "x", username: "scada" }, "devices/p/telemetry/ok"),
        true,
      );
    }
  });

  it("stays bounded under a flood of distinct topics, with the same answers", () => {
    const acl = Acl.parse(MOSQUITTO, "mosquitto", "acl.conf");
    const pump = { clientId: "pump-1", username: "device" };
    for (let i = 0; i < 120_000; i++) {
      assert.equal(acl.canPublish(pump, `devices/pump-1/telemetry/${i}`), true);
    }
    assert.equal(acl.canPublish(pump, "devices/pump-2/telemetry/1"), false);
  });
});

describe("ACL file errors", () => {
  const problems = (text: string, format: "mosquitto" | "yaml") => {
    try {
      Acl.parse(text, format, "acl.conf");
      return [];
    } catch (error) {
      assert.ok(error instanceof ConfigError);
      return error.problems;
    }
  };

  it("names each bad line of a Mosquitto ACL", () => {
    assert.deepEqual(
      problems("topic read a/#\nfrobnicate x\nuser\ntopic write a#b\n", "mosquitto"),
      [
        'acl.conf:2: unknown keyword "frobnicate" (expected topic, pattern, user or group)',
        "acl.conf:3: user needs a name",
        "acl.conf:4: misplaced # in a topic filter",
      ],
    );
  });

  it("names each bad entry of a YAML ACL", () => {
    assert.deepEqual(problems("users:\n  u:\n    - { topic: 'a/+b' }\nextra: 1\n", "yaml"), [
      "acl.conf: (root): unknown key extra",
    ]);
    assert.deepEqual(problems("patterns:\n  - { topic: 'a/+b', access: read }\n", "yaml"), [
      "acl.conf: patterns[0].topic: misplaced + in a topic filter",
    ]);
  });
});

describe("ACL groups (registered devices' roles)", () => {
  const mosquitto = Acl.parse(
    `group pumps\ntopic write sites/+/pumps/%u/#\ntopic read sites/+/pumps/%u/cmd\ntopic deny sites/+/pumps/%u/firmware\n`,
    "mosquitto",
    "acl.conf",
  );
  const yaml = Acl.parse(
    `groups:\n  pumps:\n    - { topic: "sites/+/pumps/%u/#", access: write }\n    - { topic: "sites/+/pumps/%u/cmd", access: read }\n    - { topic: "sites/+/pumps/%u/firmware", access: deny }\n`,
    "yaml",
    "acl.yaml",
  );
  const pump = { clientId: "p1", username: "p1", device: { groups: ["pumps"] } };
  const sameNameNoGroup = { clientId: "p1", username: "p1" };
  const otherGroup = { clientId: "p1", username: "p1", device: { groups: ["valves"] } };

  for (const [form, acl] of [
    ["mosquitto", mosquitto],
    ["yaml", yaml],
  ] as const) {
    it(`${form}: a group's rules are templates for its devices only`, () => {
      assert.equal(acl.canPublish(pump, "sites/north/pumps/p1/flow"), true);
      assert.equal(
        acl.canPublish(pump, "sites/north/pumps/p2/flow"),
        false,
        "another device's topic",
      );
      assert.equal(acl.canRead(pump, "sites/north/pumps/p1/cmd"), true);
      assert.equal(acl.canPublish(pump, "sites/north/pumps/p1/firmware"), false, "deny wins");
      assert.equal(acl.canPublish(sameNameNoGroup, "sites/north/pumps/p1/flow"), false);
      assert.equal(acl.canPublish(otherGroup, "sites/north/pumps/p1/flow"), false);
      assert.equal(acl.ruleCount, 3);
    });
  }

  it("a group needs a name", () => {
    assert.throws(() => Acl.parse("group\n", "mosquitto", "acl.conf"), ConfigError);
  });
});
