import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { before, describe, test } from "node:test";
import { Ajv } from "ajv";
import { parse } from "yaml";
import { runCli } from "../../harness/sluice-process.js";
import { resolveConfig } from "../../src/config/load-config.js";
import {
  byKind,
  CHART,
  type Container,
  findTool,
  type K8sObject,
  one,
  parseManifests,
  podSpec,
  ROOT,
  run,
  validateObject,
} from "./deploy-tools.js";

const FULL = join(CHART, "ci/full-values.yaml");
const BAD = join(ROOT, "test/deploy/fixtures/bad-values.yaml");
const defaults = parse(readFileSync(join(CHART, "values.yaml"), "utf8")) as {
  preStopSleepSeconds: number;
  terminationGraceMarginSeconds: number;
  shutdown: { drainSeconds: number };
};

let helm: string;

async function template(...args: string[]): Promise<K8sObject[]> {
  const result = await run(helm, ["template", "sluice", CHART, "--namespace", "mqtt", ...args]);
  assert.equal(result.code, 0, result.stderr);
  return parseManifests(result.stdout);
}

function validator() {
  const schema = JSON.parse(readFileSync(join(CHART, "values.schema.json"), "utf8")) as object;
  return new Ajv({ allErrors: true, strict: false }).compile(schema);
}

function sluiceContainer(objects: K8sObject[]): Container {
  const container = podSpec(one(objects, "Deployment")).containers.find((c) => c.name === "sluice");
  assert.ok(container, "the sluice container");
  return container;
}

/** The Sluice config file the chart rendered into its ConfigMap. */
function renderedConfig(objects: K8sObject[]): Record<string, unknown> {
  const configMap = byKind(objects, "ConfigMap").find((c) => c.data?.["sluice.yaml"]);
  assert.ok(configMap, "a ConfigMap with sluice.yaml");
  return parse(configMap.data?.["sluice.yaml"] ?? "") as Record<string, unknown>;
}

/**
 * Checks a rendered config with Sluice's own loader: every path the chart mounts is made a
 * file under a temporary root, so key names, types and cross-key rules are Sluice's.
 */
function acceptedBySluice(config: Record<string, unknown>): void {
  const root = mkdtempSync(join(tmpdir(), "sluice-chart-"));
  const text = JSON.stringify(config).replaceAll('"/etc/sluice/', `"${root}/etc/sluice/`);
  for (const match of text.matchAll(/"([^"]*\/etc\/sluice\/[^"]+)"/g)) {
    const file = match[1] as string;
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, "");
  }
  resolveConfig(JSON.parse(text) as Record<string, unknown>, {
    configDir: root,
    env: { SLUICE_NODE_ID: "sluice-5d8f7-abcde" },
  });
}

before(async () => {
  helm = await findTool("helm");
});

describe("values schema", () => {
  test("values.yaml and every ci/ values file validate against values.schema.json", () => {
    const validate = validator();
    const files = [
      join(CHART, "values.yaml"),
      ...readdirSync(join(CHART, "ci")).map((f) => join(CHART, "ci", f)),
    ];
    for (const file of files) {
      assert.ok(
        validate(parse(readFileSync(file, "utf8"))),
        `${file}: ${JSON.stringify(validate.errors)}`,
      );
    }
  });

  test("bad values - ajv rejects them, naming each problem", () => {
    const validate = validator();
    assert.equal(validate(parse(readFileSync(BAD, "utf8"))), false);
    const paths = (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`).join("\n");
    assert.match(paths, /\/listeners\/tls\/port must be integer/);
    assert.match(paths, /\/redis\/mode must be equal to one of the allowed values/);
    assert.match(paths, /must NOT have additional properties/);
  });

  test("bad values - helm lint and helm template exit non-zero", async () => {
    const lint = await run(helm, ["lint", "--strict", CHART, "-f", BAD]);
    assert.notEqual(lint.code, 0, lint.stdout);
    const rendered = await run(helm, ["template", "sluice", CHART, "-f", BAD]);
    assert.notEqual(rendered.code, 0);
    assert.match(rendered.stderr, /values don't meet the specifications of the schema/);
  });

  test("PROXY protocol without trusted proxies is refused by the schema", async () => {
    const result = await run(helm, [
      "template",
      "sluice",
      CHART,
      "--set",
      "listeners.proxyProtocol=true",
    ]);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /trustedProxies/);
  });
});

describe("helm lint", () => {
  test("default values pass helm lint --strict", async () => {
    const result = await run(helm, ["lint", "--strict", CHART]);
    assert.equal(result.code, 0, result.stdout + result.stderr);
  });

  test("full-featured values pass helm lint --strict", async () => {
    const result = await run(helm, ["lint", "--strict", CHART, "-f", FULL]);
    assert.equal(result.code, 0, result.stdout + result.stderr);
  });
});

describe("default values", () => {
  let objects: K8sObject[];
  before(async () => {
    objects = await template();
  });

  test("every rendered object validates against its Kubernetes schema", () => {
    assert.deepEqual(objects.map((o) => o.kind).sort(), [
      "ConfigMap",
      "Deployment",
      "PodDisruptionBudget",
      "Service",
      "Service",
      "ServiceAccount",
    ]);
    for (const object of objects) validateObject(object);
  });

  test("the rendered config is accepted by sluice check-config", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sluice-chart-"));
    const file = join(dir, "sluice.yaml");
    const configMap = byKind(objects, "ConfigMap")[0];
    writeFileSync(file, configMap?.data?.["sluice.yaml"] ?? "");
    const result = await runCli(["check-config", "--config", file], {
      SLUICE_NODE_ID: "sluice-5d8f7-abcde",
    });
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /nodeId: sluice-5d8f7-abcde/);
    assert.match(result.stdout, /url: redis:\/\/redis-master:6379\/0/);
  });

  test("node id from the pod name, probes on the http port, non-root and read-only", () => {
    const container = sluiceContainer(objects);
    const nodeId = container.env?.find((e) => e.name === "SLUICE_NODE_ID");
    assert.deepEqual(nodeId?.valueFrom, { fieldRef: { fieldPath: "metadata.name" } });
    const config = container.env?.find((e) => e.name === "SLUICE_CONFIG")?.value;
    assert.equal(config, "/etc/sluice/config/sluice.yaml");
    assert.deepEqual(container.readinessProbe?.httpGet, { path: "/readyz", port: "http" });
    assert.deepEqual(container.livenessProbe?.httpGet, { path: "/healthz", port: "http" });
    const http = container.ports?.find((p) => p.name === "http");
    assert.equal(http?.containerPort, (renderedConfig(objects).http as { port: number }).port);
    assert.equal(container.securityContext?.readOnlyRootFilesystem, true);
    assert.equal(container.securityContext?.allowPrivilegeEscalation, false);
    assert.equal(podSpec(one(objects, "Deployment")).securityContext?.runAsNonRoot, true);
  });

  test("grace period = preStop sleep + shutdown.drainSeconds + margin", async () => {
    const spec = podSpec(one(objects, "Deployment"));
    const { preStopSleepSeconds, terminationGraceMarginSeconds, shutdown } = defaults;
    assert.equal(
      spec.terminationGracePeriodSeconds,
      preStopSleepSeconds + shutdown.drainSeconds + terminationGraceMarginSeconds,
    );
    assert.deepEqual(sluiceContainer(objects).lifecycle?.preStop?.exec?.command, [
      "sleep",
      String(preStopSleepSeconds),
    ]);
    const longer = await template("--set", "shutdown.drainSeconds=120");
    assert.equal(
      podSpec(one(longer, "Deployment")).terminationGracePeriodSeconds,
      preStopSleepSeconds + 120 + terminationGraceMarginSeconds,
    );
    assert.equal((renderedConfig(longer).shutdown as { drainSeconds: number }).drainSeconds, 120);
  });

  test("spread over zones and nodes, with pod anti-affinity", () => {
    const spec = podSpec(one(objects, "Deployment"));
    assert.deepEqual(spec.topologySpreadConstraints?.map((c) => c.topologyKey).sort(), [
      "kubernetes.io/hostname",
      "topology.kubernetes.io/zone",
    ]);
    assert.ok(spec.affinity?.podAntiAffinity);
  });

  test("services target named container ports and select the pods", () => {
    const deployment = one(objects, "Deployment");
    const podLabels = (deployment.spec as { template: { metadata: { labels: object } } }).template
      .metadata.labels as Record<string, string>;
    const portNames = new Set(sluiceContainer(objects).ports?.map((p) => p.name));
    const services = byKind(objects, "Service");
    for (const service of services) {
      const spec = service.spec as {
        selector: Record<string, string>;
        ports: Array<{ targetPort: string }>;
      };
      for (const [key, value] of Object.entries(spec.selector)) assert.equal(podLabels[key], value);
      for (const port of spec.ports) assert.ok(portNames.has(port.targetPort), port.targetPort);
    }
    const mqtt = services.find((s) => s.metadata.name === "sluice");
    assert.equal((mqtt?.spec as { type: string }).type, "LoadBalancer");
  });

  test("mounts are whole folders (Kubernetes updates them; Sluice reloads) with volumes", () => {
    const spec = podSpec(one(objects, "Deployment"));
    const volumes = new Set(spec.volumes?.map((v) => v.name));
    for (const mount of sluiceContainer(objects).volumeMounts ?? []) {
      assert.equal(mount.subPath, undefined);
      assert.ok(volumes.has(mount.name), mount.name);
    }
  });
});

describe("full-featured values (TLS, PROXY protocol, Sentinel, HPA, monitoring, policies)", () => {
  let objects: K8sObject[];
  before(async () => {
    objects = await template("-f", FULL);
  });

  test("every rendered object validates, and every feature is there", () => {
    for (const object of objects) validateObject(object);
    const kinds = new Set(objects.map((o) => o.kind));
    for (const kind of [
      "Certificate",
      "HorizontalPodAutoscaler",
      "ServiceMonitor",
      "PrometheusRule",
      "NetworkPolicy",
      "PodDisruptionBudget",
      "Secret",
    ])
      assert.ok(kinds.has(kind), kind);
    const dashboard = byKind(objects, "ConfigMap").find((c) => c.data?.["sluice.json"]);
    assert.equal(dashboard?.metadata.labels?.grafana_dashboard, "1");
    assert.equal(dashboard?.metadata.namespace, "monitoring");
    JSON.parse(dashboard?.data?.["sluice.json"] ?? "");
    // The HPA owns the replica count.
    assert.equal((one(objects, "Deployment").spec as { replicas?: number }).replicas, undefined);
  });

  test("the rendered config is accepted by Sluice's loader", () => {
    const config = renderedConfig(objects);
    acceptedBySluice(config);
    const listeners = config.listeners as Array<Record<string, unknown>>;
    assert.deepEqual(
      listeners.map((l) => l.type),
      ["tls", "ws", "wss"],
    );
    const tls = listeners[0] as Record<string, unknown>;
    assert.equal((config.redis as { messageFormat?: string }).messageFormat, "msgpack");
    assert.equal(tls.proxyProtocol, true);
    assert.deepEqual(tls.trustedProxies, ["10.0.0.0/8"]);
    assert.equal(tls.ca, "/etc/sluice/client-ca/ca.crt");
  });

  test("the certificate's Secret is the one mounted at /etc/sluice/tls", () => {
    const certificate = one(objects, "Certificate");
    const spec = podSpec(one(objects, "Deployment"));
    const tls = spec.volumes?.find((v) => v.name === "tls") as unknown as {
      secret: { secretName: string };
    };
    assert.equal(tls.secret.secretName, (certificate.spec as { secretName: string }).secretName);
    const mount = sluiceContainer(objects).volumeMounts?.find((m) => m.name === "tls");
    assert.equal(mount?.mountPath, "/etc/sluice/tls");
  });

  test("the NetworkPolicy opens MQTT ports to all, HTTP to monitoring, egress to Redis and DNS", () => {
    const spec = one(objects, "NetworkPolicy").spec as {
      ingress: Array<{ from?: unknown[]; ports: Array<{ port: number }> }>;
      egress: Array<{ ports: Array<{ port: number }> }>;
    };
    const open = spec.ingress.find((rule) => rule.from === undefined);
    assert.deepEqual(
      open?.ports.map((p) => p.port),
      [8883, 8080, 8443],
    );
    const restricted = spec.ingress.find((rule) => rule.from !== undefined);
    assert.deepEqual(
      restricted?.ports.map((p) => p.port),
      [9100],
    );
    assert.deepEqual(
      spec.egress.flatMap((rule) => rule.ports.map((p) => p.port)),
      [53, 53, 6379, 26379],
    );
  });
});

describe("Redis password", () => {
  const password = 'p@ss:w/rd "quoted" #1';

  test("stays out of the ConfigMap and reaches Sluice from its Secret through the environment", async () => {
    const objects = await template(
      "--set",
      "redis.auth.enabled=true",
      "--set-string",
      `redis.auth.password=${password}`,
    );
    for (const configMap of byKind(objects, "ConfigMap"))
      assert.doesNotMatch(JSON.stringify(configMap), /p@ss/);
    const secret = one(objects, "Secret");
    const encoded = secret.data?.["redis-password"] ?? "";
    assert.equal(Buffer.from(encoded, "base64").toString(), password);
    const container = sluiceContainer(objects);
    const env = container.env?.find((e) => e.name === "SLUICE_REDIS_PASSWORD");
    assert.deepEqual(env?.valueFrom, {
      secretKeyRef: { name: secret.metadata.name, key: "redis-password" },
    });
    assert.equal(
      container.env?.find((e) => e.name === "SLUICE_CONFIG")?.value,
      "/etc/sluice/config/sluice.yaml",
    );
    // Sluice itself, given the rendered config and that environment, has the password.
    const rendered = parse(byKind(objects, "ConfigMap")[0]?.data?.["sluice.yaml"] ?? "") as Record<
      string,
      unknown
    >;
    const { config } = resolveConfig(rendered, {
      configDir: tmpdir(),
      env: { SLUICE_REDIS_PASSWORD: password },
    });
    assert.equal(config.redis?.password, password);
  });

  test("credentials in redis.url are refused (they would land in the ConfigMap)", async () => {
    const result = await run(helm, [
      "template",
      "sluice",
      CHART,
      "--set",
      "redis.url=redis://:secret@redis-master:6379",
    ]);
    assert.notEqual(result.code, 0);
  });
});

describe("contradictory values fail the rendering", () => {
  const cases: Array<[string, string[], RegExp]> = [
    ["TLS without a certificate", ["listeners.tls.enabled=true"], /tls.existingSecret/],
    ["several nodes without Redis", ["redis.mode=none"], /redis.mode none/],
    [
      "client certificates without a CA",
      ["listeners.tls.enabled=true", "tls.existingSecret=t", "listeners.tls.requestCert=true"],
      /tls.clientCA.existingSecret/,
    ],
    ["no listener", ["listeners.tcp.enabled=false"], /at least one/],
    ["Redis auth without a password", ["redis.auth.enabled=true"], /redis.auth.existingSecret/],
    [
      "the admin API without Redis",
      [
        "redis.mode=none",
        "replicaCount=1",
        "admin.enabled=true",
        `admin.tokens[0]=${"a".repeat(64)}`,
      ],
      /admin.enabled needs Redis/,
    ],
    [
      "the registry CRL without a device CA",
      ["listeners.tls.enabled=true", "tls.existingSecret=t", "listeners.tls.registryCrl=true"],
      /admin.deviceCa.existingSecret/,
    ],
  ];
  for (const [name, sets, message] of cases) {
    test(name, async () => {
      const args = sets.flatMap((s) => ["--set", s]);
      const result = await run(helm, ["template", "sluice", CHART, ...args]);
      assert.notEqual(result.code, 0, `${name} rendered`);
      assert.match(result.stderr, message);
    });
  }

  test("one node without Redis renders", async () => {
    const objects = await template("--set", "redis.mode=none", "--set", "replicaCount=1");
    assert.equal(renderedConfig(objects).redis, undefined);
  });
});
