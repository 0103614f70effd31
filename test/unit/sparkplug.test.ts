import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import sparkplugPayload from "sparkplug-payload";
import { sparkplugSchema } from "../../src/config/sparkplug-schema.js";
import { Acl } from "../../src/security/acl.js";
import { GroupLabels } from "../../src/sparkplug/group-labels.js";
import { IdentityBinding } from "../../src/sparkplug/identity-binding.js";
import { SparkplugAuthorizer } from "../../src/sparkplug/sparkplug-authorizer.js";
import {
  checkPayload,
  deathBdSeq,
  isStatePayload,
  withTimestamp,
} from "../../src/sparkplug/sparkplug-payload.js";
import { certificateTopic, parseSparkplugTopic } from "../../src/sparkplug/sparkplug-topic.js";

const tahu = sparkplugPayload.get("spBv1.0");
if (tahu === null) throw new Error("no spBv1.0 codec");
const encode = (payload: Parameters<typeof tahu.encodePayload>[0]) =>
  Buffer.from(tahu.encodePayload(payload));

const topic = (text: string) => {
  const parsed = parseSparkplugTopic(text);
  assert.ok(parsed, text);
  return parsed;
};

describe("sparkplug topics", () => {
  it("reads node, device and STATE topics; anything else under spBv1.0/ is invalid", () => {
    assert.deepEqual(topic("spBv1.0/Plant1/NBIRTH/edge-1"), {
      kind: "node",
      type: "NBIRTH",
      group: "Plant1",
      edge: "edge-1",
    });
    assert.deepEqual(topic("spBv1.0/Plant1/DDATA/edge-1/pump"), {
      kind: "device",
      type: "DDATA",
      group: "Plant1",
      edge: "edge-1",
      device: "pump",
    });
    assert.deepEqual(topic("spBv1.0/STATE/scada"), { kind: "state", hostId: "scada" });
    for (const bad of [
      "spBv1.0/Plant1/NBIRTH/edge-1/extra",
      "spBv1.0/Plant1/DBIRTH/edge-1",
      "spBv1.0/Plant1/NFOO/edge-1",
      "spBv1.0/Plant1//edge-1",
      "spBv1.0/STATE",
    ]) {
      assert.equal(topic(bad).kind, "invalid", bad);
    }
    assert.equal(parseSparkplugTopic("spAv1.0/Plant1/NBIRTH/e"), undefined);
    assert.equal(parseSparkplugTopic("plant/spBv1.0"), undefined);
  });

  it("names the certificate topics of the Aware profile", () => {
    assert.equal(
      certificateTopic({ kind: "node", group: "G", edge: "E" }),
      "$sparkplug/certificates/spBv1.0/G/NBIRTH/E",
    );
    assert.equal(
      certificateTopic({ kind: "device", group: "G", edge: "E", device: "D" }),
      "$sparkplug/certificates/spBv1.0/G/DBIRTH/E/D",
    );
  });
});

describe("sparkplug identity binding", () => {
  const config = sparkplugSchema.parse({
    bindIdentity: { hostApplications: ["scada-*"] },
  }).bindIdentity;
  assert.ok(config);
  const binding = new IdentityBinding(config);
  const edge = { clientId: "c1", username: "Plant1.edge-1" };
  const host = { clientId: "h1", username: "scada-primary" };

  it("an edge node publishes its own births, deaths and data only", () => {
    for (const ok of [
      "spBv1.0/Plant1/NBIRTH/edge-1",
      "spBv1.0/Plant1/NDEATH/edge-1",
      "spBv1.0/Plant1/NDATA/edge-1",
      "spBv1.0/Plant1/DBIRTH/edge-1/pump",
      "spBv1.0/Plant1/DDATA/edge-1/pump",
    ]) {
      assert.equal(binding.check(edge, topic(ok)), undefined, ok);
    }
    assert.equal(binding.check(edge, topic("spBv1.0/Plant1/NBIRTH/edge-2")), "identity");
    assert.equal(binding.check(edge, topic("spBv1.0/Plant2/NDATA/edge-1")), "identity");
    assert.equal(binding.check(edge, topic("spBv1.0/Plant1/DDATA/edge-2/pump")), "identity");
    assert.equal(binding.check(edge, topic("spBv1.0/Plant1/NCMD/edge-1")), "command");
    assert.equal(binding.check(edge, topic("spBv1.0/STATE/Plant1.edge-1")), "state");
    assert.equal(binding.check(edge, topic("spBv1.0/Plant1/NBIRTH/edge-1/x")), "topic");
  });

  it("the group is read up to the first separator, so no name binds another's pair", () => {
    const tricky = { clientId: "c", username: "Plant1.edge.1" };
    assert.equal(binding.check(tricky, topic("spBv1.0/Plant1/NDATA/edge.1")), undefined);
    assert.equal(binding.check(tricky, topic("spBv1.0/Plant1.edge/NDATA/1")), "identity");
  });

  it("only host applications command, and a host announces only its own STATE", () => {
    assert.equal(binding.check(host, topic("spBv1.0/Plant1/NCMD/edge-1")), undefined);
    assert.equal(binding.check(host, topic("spBv1.0/Plant1/DCMD/edge-1/pump")), undefined);
    assert.equal(binding.check(host, topic("spBv1.0/STATE/scada-primary")), undefined);
    assert.equal(binding.check(host, topic("spBv1.0/STATE/scada-backup")), "state");
    assert.equal(binding.check(host, topic("spBv1.0/Plant1/NBIRTH/edge-1")), "identity");
    const anonymous = { clientId: "x", username: undefined };
    assert.equal(binding.check(anonymous, topic("spBv1.0/Plant1/NDATA/edge-1")), "identity");
  });

  it("registry devices: spb:<group> binds the device id, sparkplug-host makes a host", () => {
    const device = {
      clientId: "edge-9",
      username: "edge-9",
      device: { groups: ["spb:Plant3", "line"] },
    };
    assert.equal(binding.check(device, topic("spBv1.0/Plant3/NBIRTH/edge-9")), undefined);
    assert.equal(binding.check(device, topic("spBv1.0/Plant4/NBIRTH/edge-9")), "identity");
    assert.equal(binding.check(device, topic("spBv1.0/Plant3/NBIRTH/edge-8")), "identity");
    const registryHost = {
      clientId: "ign",
      username: "ign",
      device: { groups: ["sparkplug-host"] },
    };
    assert.equal(binding.check(registryHost, topic("spBv1.0/Plant3/NCMD/edge-9")), undefined);
  });

  it("reads the certificate CN or the client id when told to", () => {
    const byCn = sparkplugSchema.parse({
      bindIdentity: { from: "certificateCn", pattern: "spb-{group}-{edge}" },
    }).bindIdentity;
    assert.ok(byCn);
    const cnBinding = new IdentityBinding(byCn);
    const subject = { clientId: "x", username: "x", certificateCn: "spb-North-rtu-4" };
    assert.equal(cnBinding.check(subject, topic("spBv1.0/North/NDATA/rtu-4")), undefined);
    assert.equal(cnBinding.check(subject, topic("spBv1.0/x/NDATA/x")), "identity");
  });

  it("the schema refuses a pattern without both placeholders", () => {
    assert.equal(sparkplugSchema.safeParse({ bindIdentity: { pattern: "{edge}" } }).success, false);
    assert.equal(
      sparkplugSchema.safeParse({ bindIdentity: { pattern: "{group}/{edge}" } }).success,
      false,
    );
  });
});

describe("sparkplug payloads", () => {
  const now = Date.now();
  const nbirth = encode({
    timestamp: now,
    seq: 0,
    metrics: [
      { name: "bdSeq", type: "UInt64", value: 7 },
      { name: "Node Control/Rebirth", type: "Boolean", value: false },
    ],
  });

  it("accepts what Tahu encodes and reads the bdSeq", () => {
    assert.deepEqual(checkPayload("NBIRTH", nbirth), { ok: true, bdSeq: "7" });
    const ndeath = encode({ metrics: [{ name: "bdSeq", type: "UInt64", value: 7 }] });
    assert.equal(checkPayload("NDEATH", ndeath).ok, true);
    assert.equal(deathBdSeq(ndeath), "7");
    const ddata = encode({
      timestamp: now,
      seq: 4,
      metrics: [{ name: "t", type: "Float", value: 1.5 }],
    });
    assert.equal(checkPayload("DDATA", ddata).ok, true);
  });

  it("refuses bytes that are no Sparkplug payload and payloads missing what the spec requires", () => {
    const refusal = (type: Parameters<typeof checkPayload>[0], bytes: Uint8Array) => {
      const check = checkPayload(type, bytes);
      return check.ok ? "ok" : check.reason;
    };
    assert.equal(refusal("NDATA", Buffer.from("hello world, not protobuf")), "malformed");
    assert.equal(refusal("NDATA", Buffer.from([0x08])), "malformed");
    assert.equal(refusal("NDATA", Buffer.alloc(0)), "malformed", "no seq, no timestamp");
    assert.equal(refusal("NDATA", encode({ timestamp: now, seq: 256 })), "malformed");
    assert.equal(refusal("NDATA", encode({ seq: 1 })), "malformed", "no timestamp");
    assert.equal(refusal("NBIRTH", encode({ timestamp: now, seq: 0 })), "bdseq");
    assert.equal(refusal("NDEATH", encode({})), "bdseq");
  });

  it("rewrites an NDEATH's timestamp and keeps its metrics", () => {
    const ndeath = encode({ timestamp: 1, metrics: [{ name: "bdSeq", type: "UInt64", value: 3 }] });
    const rewritten = withTimestamp(ndeath, now);
    assert.ok(rewritten);
    const decoded = tahu.decodePayload(rewritten);
    assert.equal(Number(decoded.timestamp), now);
    assert.equal(deathBdSeq(rewritten), "3");
    assert.equal(withTimestamp(Buffer.from("garbage!"), now), undefined);
  });

  it("STATE is JSON with online and timestamp", () => {
    assert.equal(isStatePayload(Buffer.from('{"online":true,"timestamp":1}')), true);
    assert.equal(isStatePayload(Buffer.from("ONLINE")), false);
    assert.equal(isStatePayload(Buffer.from('{"online":"yes","timestamp":1}')), false);
  });
});

describe("sparkplug group labels", () => {
  it("admits groups up to the bound; later and refused-only groups share _other", () => {
    const labels = new GroupLabels(2);
    assert.equal(labels.labelOf("A"), "_other");
    assert.equal(labels.admit("A"), "A");
    assert.equal(labels.admit("B"), "B");
    assert.equal(labels.admit("C"), "_other");
    assert.equal(labels.labelOf("A"), "A");
    assert.equal(labels.labelOf(undefined), "_none");
  });
});

describe("the edge fleet ACL of docs/sparkplug.md", () => {
  const docs = readFileSync(
    fileURLToPath(new URL("../../../docs/sparkplug.md", import.meta.url)),
    "utf8",
  );
  const block = /```\n(# acl\.conf\n[\s\S]*?)```/.exec(docs)?.[1];
  assert.ok(block, "the ACL example");
  const config = sparkplugSchema.parse({ bindIdentity: { hostApplications: ["scada-*"] } });
  assert.ok(config.bindIdentity);
  const refusals: string[] = [];
  const authorizer = new SparkplugAuthorizer(Acl.parse(block, "mosquitto", "sparkplug.md"), {
    binding: new IdentityBinding(config.bindIdentity),
    guardCertificates: true,
    onRefused: (_subject, _topic, _group, reason) => refusals.push(reason),
  });
  const press = { clientId: "press-7", username: "press-7", device: { groups: ["spb:Plant1"] } };
  const other = { clientId: "press-8", username: "press-8", device: { groups: ["spb:Plant1"] } };
  const host = { clientId: "scada-primary", username: "scada-primary" };

  it("an edge node writes its own topics and reads its own commands and STATE", () => {
    assert.equal(authorizer.canPublish(press, "spBv1.0/Plant1/NBIRTH/press-7"), true);
    assert.equal(authorizer.canPublish(press, "spBv1.0/Plant1/DDATA/press-7/ram"), true);
    assert.equal(authorizer.canRead(press, "spBv1.0/Plant1/NCMD/press-7"), true);
    assert.equal(authorizer.canRead(press, "spBv1.0/Plant1/DCMD/press-7/ram"), true);
    assert.equal(authorizer.canRead(press, "spBv1.0/STATE/scada-primary"), true);
    assert.equal(authorizer.canRead(press, "spBv1.0/Plant1/NCMD/press-8"), false);
    assert.equal(
      authorizer.canRead(press, "$sparkplug/certificates/spBv1.0/Plant1/NBIRTH/x"),
      false,
    );
  });

  it("another edge node of the group cannot speak for it, nor command it", () => {
    refusals.length = 0;
    assert.equal(authorizer.canPublish(other, "spBv1.0/Plant1/NDEATH/press-7"), false);
    assert.equal(authorizer.canPublish(other, "spBv1.0/Plant1/NCMD/press-7"), false);
    assert.equal(
      authorizer.canPublish(other, "$sparkplug/certificates/spBv1.0/Plant1/NBIRTH/press-7"),
      false,
    );
    assert.deepEqual(refusals, ["identity", "command", "certificate"]);
  });

  it("the host commands, announces its STATE and reads the certificates", () => {
    assert.equal(authorizer.canPublish(host, "spBv1.0/Plant1/DCMD/press-7/ram"), true);
    assert.equal(authorizer.canPublish(host, "spBv1.0/STATE/scada-primary"), true);
    assert.equal(authorizer.canSubscribe(host, "$sparkplug/certificates/#"), true);
    assert.equal(authorizer.canPublish(host, "spBv1.0/Plant1/NBIRTH/press-7"), false);
  });
});
