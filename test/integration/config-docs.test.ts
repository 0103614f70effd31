import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { createTestPki, type TestPki, writeCrl } from "../../harness/certs.js";
import { runCli } from "../../harness/sluice-process.js";
import { hashPassword } from "../../src/security/password-hash.js";

const DOCS = fileURLToPath(new URL("../../../docs/configuration.md", import.meta.url));

/** Keys check-config prints that are derived, not set: the folder paths resolved against. */
const DERIVED = new Set(["configDir"]);

let dir: string;
let pki: TestPki;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-config-docs-"));
  pki = await createTestPki();
});
after(async () => {
  await pki?.cleanup();
  await rm(dir, { recursive: true, force: true });
});

/** Dotted key paths of every value in a printed config; list entries of mappings as `[]`. */
function leafPaths(value: unknown, prefix = ""): string[] {
  if (Array.isArray(value) && value.some((item) => typeof item === "object" && item !== null)) {
    return value.flatMap((item) => leafPaths(item, `${prefix}[]`));
  }
  if (typeof value === "object" && value !== null && !Array.isArray(value)) {
    return Object.entries(value).flatMap(([key, child]) =>
      leafPaths(child, prefix === "" ? key : `${prefix}.${key}`),
    );
  }
  return [prefix];
}

/** The keys docs/configuration.md lists in its table of all keys. */
function documentedKeys(): Set<string> {
  const keys = new Set<string>();
  for (const match of readFileSync(DOCS, "utf8").matchAll(/^\| \[`([^`]+)`\]\(#[^)]+\) \|/gm)) {
    keys.add(match[1] as string);
  }
  return keys;
}

async function checkConfig(name: string, yaml: string): Promise<string[]> {
  const file = join(dir, name);
  await writeFile(file, yaml);
  const { code, stdout, stderr } = await runCli(["check-config", "--config", file]);
  assert.equal(code, 0, `check-config ${name} failed:\n${stderr}`);
  return leafPaths(parse(stdout)).filter((path) => !DERIVED.has(path));
}

describe("configuration reference against check-config", () => {
  it("documents exactly the keys check-config prints for configs that set every key", async () => {
    const crl = await writeCrl(pki, []);
    await writeFile(join(dir, "passwd"), `scada:${await hashPassword("secret")}\n`);
    await writeFile(join(dir, "acl.conf"), "user scada\ntopic read plant/#\n");
    const tls = `cert: ${pki.serverCert}, key: ${pki.serverKey}, passphrase: unused, ca: ${pki.caCert}, crl: ${crl}, registryCrl: true, requestCert: true, requireClientCert: true, minVersion: TLSv1.3, ciphers: ECDHE-ECDSA-AES128-GCM-SHA256`;
    const rates =
      "messagesPerSecond: 100, burstMessages: 200, bytesPerSecond: 1048576, burstBytes: 2097152, disconnectAfterSeconds: 30";
    // Redis takes one of three forms, so one config cannot set every key: three together do.
    const common = `nodeId: plant-a-1
listeners:
  - { type: tcp, host: 127.0.0.1, port: 0, proxyProtocol: true, trustedProxies: [10.0.0.0/8], noDelay: false }
  - { type: tls, host: 127.0.0.1, port: 0, proxyProtocol: true, trustedProxies: [10.0.0.0/8], noDelay: true, ${tls} }
  - { type: ws, host: 127.0.0.1, port: 0, path: /mqtt, trustedProxies: [10.0.0.5] }
  - { type: wss, host: 127.0.0.1, port: 0, path: /mqtt, trustedProxies: [10.0.0.5], ${tls} }
http: { host: 127.0.0.1, port: 0 }
log: { level: warn, format: json }
auth: { allowAnonymous: false, passwordFile: passwd, certificateIdentity: cn-is-clientid, clientIdPattern: "%u", scram: true }
acl: { file: acl.conf }
limits:
  maxPacketBytes: 65536
  maxTopicBytes: 1024
  connectTimeoutMs: 5000
  maxKeepaliveSeconds: 300
  connections: { perNode: 20000, perIp: 20, perUsername: 5, ratePerIp: 5, cluster: 100000, answerRefusals: true }
  flapping: { maxConnects: 15, windowSeconds: 60, banSeconds: 300 }
  overload: { eventLoopDelayMs: 2000, heapUsedRatio: 0.9, recoverMs: 2000 }
  publish: { ${rates}, overrides: [{ username: scada, ${rates} }, { clientId: "hmi-*" }] }
  subscriptions: { perClient: 100, maxTopicLevels: 16 }
  authFailures: { perIp: 10, perUsername: 5, blockSeconds: 300, acrossSources: { alertAfter: 50, block: false } }
  queue: { maxInflight: 20, maxQueuedPerClient: 1000, drainTimeoutMs: 10000, maxBufferedBytes: 262144 }
shutdown: { drainSeconds: 20, publishWills: true, serverReference: "mqtt.plant.example:8883" }
mqtt5: { receiveMaximum: 100, topicAliasMaximum: 10, maxSessionExpirySeconds: 604800 }
sparkplug: { aware: true, rewriteDeathTimestamp: true, bindIdentity: { from: username, pattern: "{group}.{edge}", hostApplications: [scada-primary] }, validatePayloads: { groups: ["Plant*"] }, metricGroups: 100 }
sharedSubscriptions: { strategy: round_robin, groups: [{ match: "historian-*", strategy: hash_topic }], maxQueued: 1000, maxGroups: 100 }
admin:
  host: 127.0.0.1
  port: 0
  tokens: ["${"a".repeat(64)}"]
  tls: { cert: ${pki.serverCert}, key: ${pki.serverKey}, ca: ${pki.caCert} }
  maxBodyBytes: 65536
  ca: { cert: ${pki.caCert}, key: ${pki.caKey}, chain: ${pki.caCert}, deviceCertificateDays: 90 }
  enrollmentTokenSeconds: 86400
  maxConnectionsPerIp: 16
  unauthenticatedRequestsPerMinute: 60
registry: { file: devices.json }
`;
    const redisCommon = `keyPrefix: "plant:", nodeLeaseSeconds: 15, heartbeatMs: 1000, deadNodeByConnections: true, fence: { afterMs: 8000 }, username: sluice, password: secret, tls: { ca: ${pki.caCert}, cert: ${pki.clientCert}, key: ${pki.clientKey} }`;
    const printed = new Set([
      ...(await checkConfig(
        "url.yaml",
        `${common}redis: { url: "redis://127.0.0.1:6379/0", ${redisCommon} }\n`,
      )),
      ...(await checkConfig(
        "sentinel.yaml",
        `${common}redis: { sentinels: [{ host: 127.0.0.1, port: 26379 }], name: mymaster, sentinelPassword: secret, replicaAcks: { replicas: 1, timeoutMs: 500 }, ${redisCommon} }\n`,
      )),
      ...(await checkConfig(
        "cluster.yaml",
        `${common}redis: { cluster: [{ host: 127.0.0.1, port: 7000 }], ${redisCommon} }\n`,
      )),
    ]);
    const documented = documentedKeys();
    assert.deepEqual(
      [...printed].filter((key) => !documented.has(key)).sort(),
      [],
      "printed by check-config, missing from docs/configuration.md",
    );
    assert.deepEqual(
      [...documented].filter((key) => !printed.has(key)).sort(),
      [],
      "in docs/configuration.md, not printed by check-config (set it in this test's configs)",
    );
  });
});
