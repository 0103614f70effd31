import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as pause } from "node:timers/promises";
import type { IClientOptions } from "mqtt";
import type { IPubackPacket } from "mqtt-packet";
import sparkplugPayload from "sparkplug-payload";
import type { UPayload } from "sparkplug-payload/lib/sparkplugbpayload.js";
import { withDeadline } from "../../harness/deadline.js";
import { HaProxy } from "../../harness/haproxy.js";
import {
  connackOf,
  connect,
  end,
  Inbox,
  type MqttClient,
  nextPacket,
} from "../../harness/mqtt-client.js";
import { metricSum } from "../../harness/node-metrics.js";
import { RedisServer } from "../../harness/redis-server.js";
import { type LogLine, SluiceProcess } from "../../harness/sluice-process.js";
import { hashPassword } from "../../src/security/password-hash.js";

/**
 * Issue 18: a Sparkplug B edge node with devices and host applications on two node processes
 * behind HAProxy, speaking Sparkplug B through MQTT.js and Eclipse Tahu's payload codec.
 */
const tahu = sparkplugPayload.get("spBv1.0");
if (tahu === null) throw new Error("no spBv1.0 codec");
const encode = (payload: UPayload): Buffer => Buffer.from(tahu.encodePayload(payload));
const decode = (bytes: Buffer): UPayload => tahu.decodePayload(bytes);

/**
 * The default heartbeat and lease: a killed node is dead after 3 silent heartbeats (its
 * connections to Redis closed with it), and the survivor publishes its wills within a quarter
 * heartbeat of that (aedes' own sweep alone: 3 to 7 heartbeats; the lease alone: up to 15 s).
 */
const HEARTBEAT_MS = 1_000;
const DEATH_BOUND_MS = 4_500;
const V5: IClientOptions = { protocolVersion: 5 };
const GROUP = "Plant1";
const EDGE = "edge-1";
const PASSWORDS = {
  [`${GROUP}.${EDGE}`]: "edge-pw",
  [`${GROUP}.edge-2`]: "spoof-pw",
  scada: "scada-pw",
  "scada-late": "late-pw",
};

let dir: string;
let redis: RedisServer;
let haproxy: HaProxy;
const nodes: SluiceProcess[] = [];
const direct: string[] = [];
const httpUrls: string[] = [];

/** The NDEATHs and DDEATHs every node has published. */
async function clusterDeaths(): Promise<number> {
  let sum = 0;
  for (const url of httpUrls) sum += await metricSum(url, "sluice_sparkplug_deaths_total");
  return sum;
}

const login = (username: keyof typeof PASSWORDS) => ({
  username,
  password: PASSWORDS[username],
});

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-sparkplug-"));
  redis = await RedisServer.start();
  const prefix = `spb${randomBytes(4).toString("hex")}:`;
  const lines = await Promise.all(
    Object.entries(PASSWORDS).map(async ([user, pw]) => `${user}:${await hashPassword(pw)}`),
  );
  await writeFile(join(dir, "passwd"), `${lines.join("\n")}\n`);
  const backends = [];
  for (const name of ["spb-a", "spb-b"]) {
    const file = join(dir, `${name}.yaml`);
    await writeFile(
      file,
      `nodeId: ${name}\nlisteners: [{ type: tcp, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: 0 }\n` +
        `auth: { passwordFile: passwd }\nlog: { level: debug, format: json }\n` +
        `redis: { url: "${redis.url}", keyPrefix: "${prefix}", heartbeatMs: ${HEARTBEAT_MS} }\n` +
        "sparkplug:\n  aware: true\n  rewriteDeathTimestamp: true\n" +
        '  bindIdentity: { hostApplications: ["scada*"] }\n  validatePayloads: { groups: ["Plant*"] }\n',
    );
    const node = SluiceProcess.spawn(["start", "--config", file]);
    nodes.push(node);
    const { ports, httpPort } = await node.ready();
    direct.push(`mqtt://127.0.0.1:${ports.tcp}`);
    httpUrls.push(`http://127.0.0.1:${httpPort}`);
    backends.push({ name, mqttPort: ports.tcp as number, httpPort });
  }
  haproxy = await HaProxy.start(backends);
});
after(async () => {
  await haproxy?.stop();
  for (const node of nodes) node.kill();
  await Promise.all(nodes.map((n) => n.exited));
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** Publishes at QoS 1 and resolves with the PUBACK's reason code (0 when it carries none). */
async function pubackCode(client: MqttClient, topic: string, payload: Buffer, retain = false) {
  const ack = nextPacket<IPubackPacket>(client, "puback");
  client.publish(topic, payload, { qos: 1, retain }, () => {});
  return (await ack).reasonCode ?? 0;
}

const nodeTopic = (type: string, edge = EDGE) => `spBv1.0/${GROUP}/${type}/${edge}`;
const deviceTopic = (type: string, device: string) => `spBv1.0/${GROUP}/${type}/${EDGE}/${device}`;
const certificates = `$sparkplug/certificates/spBv1.0/${GROUP}/#`;

let seq = 0;
const nextSeq = () => {
  const value = seq;
  seq = (seq + 1) % 256;
  return value;
};
const bdSeqMetric = (value: number) => ({ name: "bdSeq", type: "UInt64" as const, value });
const nbirth = (bdSeq: number) => {
  seq = 0;
  return encode({
    timestamp: Date.now(),
    seq: nextSeq(),
    metrics: [bdSeqMetric(bdSeq), { name: "Node Control/Rebirth", type: "Boolean", value: false }],
  });
};
const dbirth = (name: string) =>
  encode({
    timestamp: Date.now(),
    seq: nextSeq(),
    metrics: [{ name: `${name}/level`, type: "Float", value: 1.5 }],
  });
const ndeathWill = (bdSeq: number) => ({
  topic: nodeTopic("NDEATH"),
  payload: encode({ timestamp: Date.now(), metrics: [bdSeqMetric(bdSeq)] }),
  qos: 1 as const,
  retain: false,
});
const state = (online: boolean) => Buffer.from(JSON.stringify({ online, timestamp: Date.now() }));

/** A host application joining late, through HAProxy, subscribed to the group's certificates. */
async function lateHost(clientId: string): Promise<{ client: MqttClient; inbox: Inbox }> {
  const client = await connect(haproxy.url, { ...V5, ...login("scada-late"), clientId });
  const inbox = new Inbox(client);
  await client.subscribeAsync(certificates, { qos: 1 });
  return { client, inbox };
}

/** Which node process holds a client id, from its `client.connected` log line. */
async function nodeOf(clientId: string): Promise<number> {
  const index = await withDeadline(
    Promise.race(
      nodes.map((node, i) =>
        node
          .waitForLog((l) => l.event === "client.connected" && l.clientId === clientId)
          .then(() => i),
      ),
    ),
    5_000,
    `${clientId} connected`,
  );
  return index;
}

describe("Sparkplug B across two nodes behind HAProxy", () => {
  let host: MqttClient | undefined;
  let edge: MqttClient | undefined;
  let hostInbox: Inbox;
  let edgeNode = -1;

  it("a late host application sees the births, retained on $sparkplug/certificates", async () => {
    edge = await connect(haproxy.url, {
      ...V5,
      ...login(`${GROUP}.${EDGE}`),
      clientId: "edge-1-client",
      will: ndeathWill(0),
    });
    edge.on("error", () => {});
    edgeNode = await nodeOf("edge-1-client");
    // The primary host on the other node, so that the edge node's death must cross the cluster.
    host = await connect(direct[1 - edgeNode] as string, {
      ...V5,
      ...login("scada"),
      clientId: "scada",
      will: { topic: "spBv1.0/STATE/scada", payload: state(false), qos: 1, retain: true },
    });
    hostInbox = new Inbox(host);
    await host.subscribeAsync("spBv1.0/#", { qos: 1 });
    assert.equal(await pubackCode(host, "spBv1.0/STATE/scada", state(true), true), 0);

    assert.equal(await pubackCode(edge, nodeTopic("NBIRTH"), nbirth(0)), 0);
    assert.equal(await pubackCode(edge, deviceTopic("DBIRTH", "pump"), dbirth("pump")), 0);
    assert.equal(await pubackCode(edge, deviceTopic("DBIRTH", "valve"), dbirth("valve")), 0);
    await withDeadline(hostInbox.waitFor(4), 5_000, "the host got STATE and the births live");
    const edgeMetrics = httpUrls[edgeNode] as string;
    assert.equal(await metricSum(edgeMetrics, "sluice_sparkplug_edge_nodes_online"), 1);
    assert.equal(await metricSum(edgeMetrics, "sluice_sparkplug_births_total"), 3);
    assert.equal(
      await metricSum(httpUrls[1 - edgeNode] as string, "sluice_sparkplug_births_total"),
      0,
    );

    const { client: late, inbox: lateInbox } = await lateHost("late-1");
    try {
      const got = await withDeadline(lateInbox.waitFor(3), 5_000, "three certificates");
      const byTopic = new Map(got.map((m) => [m.topic, m]));
      const nodeCertificate = byTopic.get(`$sparkplug/certificates/${nodeTopic("NBIRTH")}`);
      assert.ok(nodeCertificate, "the NBIRTH certificate");
      assert.equal(
        nodeCertificate.packet.retain,
        true,
        "tck-id-conformance-mqtt-aware-nbirth-mqtt-retain",
      );
      assert.equal(String(decode(nodeCertificate.payload).metrics?.[0]?.value), "0", "its bdSeq");
      for (const device of ["pump", "valve"]) {
        const certificate = byTopic.get(`$sparkplug/certificates/${deviceTopic("DBIRTH", device)}`);
        assert.ok(certificate, `the DBIRTH certificate of ${device}`);
        assert.equal(certificate.packet.retain, true);
        assert.equal(decode(certificate.payload).metrics?.[0]?.name, `${device}/level`);
      }
      // STATE, retained, for a host that joins late.
      const states = new Inbox(late);
      await late.subscribeAsync("spBv1.0/STATE/+", { qos: 1 });
      const [online] = await withDeadline(states.waitFor(1), 5_000, "retained STATE");
      assert.equal(online?.packet.retain, true);
      assert.equal(JSON.parse(String(online?.payload)).online, true);
    } finally {
      await end(late);
    }
  });

  it("a rebirth replaces the certificates: a device left out loses its DBIRTH", async () => {
    assert.ok(edge && host);
    const { client: watcher, inbox: watched } = await lateHost("late-2");
    try {
      await withDeadline(watched.waitFor(3), 5_000, "the first certificates");
      const rebirth = nbirth(0);
      assert.equal(await pubackCode(edge, nodeTopic("NBIRTH"), rebirth), 0);
      assert.equal(await pubackCode(edge, deviceTopic("DBIRTH", "pump"), dbirth("pump")), 0);
      // The NBIRTH clears both DBIRTH certificates, then stands; the pump's comes back.
      const live = (await withDeadline(watched.waitFor(7), 5_000, "the rebirth's")).slice(3);
      const cleared = live.filter((m) => m.payload.length === 0).map((m) => m.topic);
      assert.deepEqual(cleared.sort(), [
        `$sparkplug/certificates/${deviceTopic("DBIRTH", "pump")}`,
        `$sparkplug/certificates/${deviceTopic("DBIRTH", "valve")}`,
      ]);
      const { client: late, inbox: lateInbox } = await lateHost("late-3");
      try {
        const got = await withDeadline(lateInbox.waitFor(2), 5_000, "two certificates");
        assert.deepEqual(got.map((m) => m.topic).sort(), [
          `$sparkplug/certificates/${deviceTopic("DBIRTH", "pump")}`,
          `$sparkplug/certificates/${nodeTopic("NBIRTH")}`,
        ]);
        const nodeCertificate = got.find((m) => m.topic.includes("NBIRTH"));
        assert.deepEqual(nodeCertificate?.payload, rebirth, "the rebirth, not the first birth");
        // The valve's certificate is gone: subscribing to it, then to the pump's again, brings
        // the pump's alone (a retained valve certificate would come first, on one connection).
        await late.subscribeAsync(`$sparkplug/certificates/${deviceTopic("DBIRTH", "valve")}`, {
          qos: 1,
        });
        await late.subscribeAsync(`$sparkplug/certificates/${deviceTopic("DBIRTH", "pump")}`, {
          qos: 1,
        });
        const [, , next] = await withDeadline(lateInbox.waitFor(3), 5_000, "the pump's again");
        assert.equal(next?.topic, `$sparkplug/certificates/${deviceTopic("DBIRTH", "pump")}`);
      } finally {
        await end(late);
      }
    } finally {
      await end(watcher);
    }
  });

  it("identity binding refuses a spoofed edge node, commands from an edge node and forged certificates (0x87)", async () => {
    assert.ok(edge);
    const spoof = await connect(haproxy.url, {
      ...V5,
      ...login(`${GROUP}.edge-2`),
      clientId: "spoof",
    });
    try {
      assert.equal(await pubackCode(spoof, nodeTopic("NBIRTH"), nbirth(0)), 0x87);
      assert.equal(await pubackCode(spoof, nodeTopic("NDATA"), nbirth(0)), 0x87);
      assert.equal(await pubackCode(spoof, deviceTopic("DDATA", "pump"), dbirth("pump")), 0x87);
      assert.equal(await pubackCode(spoof, "spBv1.0/STATE/scada", state(false), true), 0x87);
      assert.equal(
        await pubackCode(spoof, `$sparkplug/certificates/${nodeTopic("NBIRTH")}`, nbirth(0), true),
        0x87,
      );
      // Its own topics are fine.
      const own = encode({ timestamp: Date.now(), seq: 0, metrics: [bdSeqMetric(0)] });
      assert.equal(await pubackCode(spoof, nodeTopic("NBIRTH", "edge-2"), own), 0x99, "no will");
      assert.equal(await pubackCode(edge, nodeTopic("NCMD"), nbirth(0)), 0x87, "no host");
    } finally {
      await end(spoof);
    }
    // A will naming another edge node would be published for it later: refused at CONNECT.
    const connack = await connackOf(haproxy.url, {
      ...V5,
      ...login(`${GROUP}.edge-2`),
      clientId: "spoof-will",
      will: ndeathWill(0),
    });
    assert.equal(connack.reasonCode, 0x87);
    const audited = (match: (l: LogLine) => boolean, what: string) =>
      withDeadline(
        Promise.race(
          nodes.map((n) => n.waitForLog((l) => l.event === "audit.sparkplug_refused" && match(l))),
        ),
        5_000,
        what,
      );
    await audited(
      (l) => l.reason === "identity" && l.username === `${GROUP}.edge-2`,
      "audited with its identity",
    );
    await audited((l) => l.reason === "command", "the command refusal audited");
    await audited((l) => l.reason === "certificate", "the certificate refusal audited");
  });

  it("payload validation refuses malformed payloads, a wrong bdSeq and a bad STATE (0x99)", async () => {
    assert.ok(edge && host);
    const before = hostInbox.received.length;
    assert.equal(await pubackCode(edge, nodeTopic("NDATA"), Buffer.from("not protobuf!")), 0x99);
    assert.equal(await pubackCode(edge, nodeTopic("NDATA"), encode({ seq: 1 })), 0x99);
    assert.equal(await pubackCode(edge, nodeTopic("NBIRTH"), nbirth(5)), 0x99, "bdSeq 5, will 0");
    assert.equal(await pubackCode(host, "spBv1.0/STATE/scada", Buffer.from("ONLINE"), true), 0x99);
    const data = encode({ timestamp: Date.now(), seq: nextSeq(), metrics: [] });
    assert.equal(await pubackCode(edge, nodeTopic("NDATA"), data), 0);
    const [delivered] = (await withDeadline(hostInbox.waitFor(before + 1), 5_000, "NDATA")).slice(
      before,
    );
    assert.equal(delivered?.topic, nodeTopic("NDATA"), "only the valid NDATA reached the host");
    // The audit lines come over the nodes' stdout, which may trail the PUBACKs.
    for (const reason of ["malformed", "bdseq", "state_format"]) {
      await withDeadline(
        Promise.race(
          nodes.map((n) =>
            n.waitForLog((l) => l.event === "audit.sparkplug_refused" && l.reason === reason),
          ),
        ),
        5_000,
        `the audit line of ${reason}`,
      );
    }
  });

  it("a delayed NDEATH (MQTT 5 Will Delay) fired by the cluster's timers is timestamped when sent", async () => {
    assert.ok(host);
    const topic = nodeTopic("NDEATH", "edge-2");
    const edge2 = await connect(direct[edgeNode] as string, {
      ...V5,
      ...login(`${GROUP}.edge-2`),
      clientId: "edge-2-delayed",
      properties: { sessionExpiryInterval: 10 },
      will: { ...ndeathWill(3), topic, properties: { willDelayInterval: 1 } },
    });
    edge2.on("error", () => {});
    const before = hostInbox.received.length;
    const deathsBefore = await clusterDeaths();
    const droppedAt = Date.now();
    edge2.stream.destroy();
    const arrived = await withDeadline(
      (async () => {
        for (let n = before + 1; ; n++) {
          const message = (await hostInbox.waitFor(n))[n - 1];
          if (message?.topic === topic) return message;
        }
      })(),
      DEATH_BOUND_MS + 1_000,
      "the delayed NDEATH",
    );
    const payload = decode(arrived.payload as Buffer);
    assert.equal(String(payload.metrics?.[0]?.value), "3", "the will's bdSeq");
    assert.ok(
      Number(payload.timestamp) >= droppedAt + 1_000,
      `timestamped when sent, after the 1 s delay (${Number(payload.timestamp) - droppedAt} ms)`,
    );
    // Counted once Redis has answered its PUBLISH, which may be after the local subscriber got
    // it (local-first delivery): the next test counts deaths from a settled figure.
    await withDeadline(
      (async () => {
        while ((await clusterDeaths()) < deathsBefore + 1) await pause(20);
      })(),
      5_000,
      "the delayed NDEATH counted",
    );
    edge2.end(true);
  });

  it("SIGKILL of the edge node's node: its NDEATH reaches the host once, timestamped when sent", async () => {
    assert.ok(host && edge);
    const survivor = httpUrls[1 - edgeNode] as string;
    const deathsBefore = await metricSum(survivor, "sluice_sparkplug_deaths_total");
    const before = hostInbox.received.length;
    const killedAt = Date.now();
    nodes[edgeNode]?.kill("SIGKILL");
    await nodes[edgeNode]?.exited;
    const [death] = (
      await withDeadline(hostInbox.waitFor(before + 1), DEATH_BOUND_MS, "the NDEATH")
    ).slice(before);
    const elapsed = Date.now() - killedAt;
    assert.equal(death?.topic, nodeTopic("NDEATH"));
    const payload = decode(death?.payload as Buffer);
    assert.equal(String(payload.metrics?.[0]?.value), "0", "the will's bdSeq");
    assert.ok(
      Number(payload.timestamp) >= killedAt,
      "tck-id-conformance-mqtt-aware-ndeath-timestamp",
    );
    // Two more passes of the survivor's will sweep: a second copy would show.
    await new Promise((resolve) => setTimeout(resolve, 8 * HEARTBEAT_MS));
    const deaths = hostInbox.received.filter((m) => m.topic === nodeTopic("NDEATH"));
    assert.equal(deaths.length, 1, "published once");
    assert.equal(await metricSum(survivor, "sluice_sparkplug_deaths_total"), deathsBefore + 1);
    const refused = await fetch(`${survivor}/metrics`).then((r) => r.text());
    assert.match(refused, /sluice_sparkplug_refused_total\{[^}]*reason="state_format"[^}]*\} 1/);
    process.stdout.write(`# Sparkplug NDEATH delivered ${elapsed} ms after SIGKILL\n`);
    edge.end(true);
    await end(host);
  });
});
