import assert from "node:assert/strict";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { parse } from "yaml";
import { resolveConfig } from "../../src/config/load-config.js";
import {
  byKind,
  CHART,
  findTool,
  type K8sObject,
  one,
  parseManifests,
  podSpec,
  ROOT,
  run,
  validateObject,
} from "./deploy-tools.js";

const KUSTOMIZATIONS = ["k8s/base", "k8s/overlays/redis-sentinel", "k8s/monitoring"];

let kustomize: string;
let helm: string;
const built = new Map<string, K8sObject[]>();

async function build(dir: string): Promise<K8sObject[]> {
  const cached = built.get(dir);
  if (cached) return cached;
  const result = await run(kustomize, ["build", join(ROOT, dir)]);
  assert.equal(result.code, 0, result.stderr);
  const objects = parseManifests(result.stdout);
  built.set(dir, objects);
  return objects;
}

function sluiceConfig(objects: K8sObject[]): Record<string, unknown> {
  const configMap = byKind(objects, "ConfigMap").find((c) => c.data?.["sluice.yaml"]);
  assert.ok(configMap, "the Sluice ConfigMap");
  return parse(configMap.data?.["sluice.yaml"] ?? "") as Record<string, unknown>;
}

before(async () => {
  kustomize = await findTool("kustomize");
  helm = await findTool("helm");
});

describe("kustomize", () => {
  for (const dir of KUSTOMIZATIONS) {
    test(`${dir} builds and every object validates against its schema`, async () => {
      const objects = await build(dir);
      assert.ok(objects.length > 0);
      for (const object of objects) validateObject(object);
    });
  }

  test("the base is the chart with its default values", async () => {
    const base = await build("k8s/base");
    const result = await run(helm, [
      "template",
      "sluice",
      CHART,
      "--set",
      "fullnameOverride=sluice",
    ]);
    assert.equal(result.code, 0, result.stderr);
    const chart = parseManifests(result.stdout);
    assert.deepEqual(
      base.map((o) => `${o.kind}/${o.metadata.name.replace(/-[a-z0-9]{10}$/, "")}`).sort(),
      chart.map((o) => `${o.kind}/${o.metadata.name}`).sort(),
    );
    assert.deepEqual(sluiceConfig(base), sluiceConfig(chart));
    const strip = (objects: K8sObject[]) => {
      const spec = structuredClone(podSpec(one(objects, "Deployment")));
      for (const volume of spec.volumes ?? []) delete volume.configMap;
      delete spec.affinity;
      delete spec.topologySpreadConstraints;
      return spec;
    };
    assert.deepEqual(strip(base), strip(chart));
  });

  test("the base config and the overlay config are accepted by Sluice's loader", async () => {
    for (const dir of ["k8s/base", "k8s/overlays/redis-sentinel"]) {
      resolveConfig(sluiceConfig(await build(dir)), {
        configDir: ROOT,
        env: { SLUICE_NODE_ID: "sluice-5d8f7-abcde" },
      });
    }
  });

  test("the overlay's Sluice reaches its Sentinels through a Service that exists", async () => {
    const objects = await build("k8s/overlays/redis-sentinel");
    const redis = sluiceConfig(objects).redis as {
      sentinels: Array<{ host: string; port: number }>;
      name: string;
      url?: string;
    };
    assert.equal(redis.url, undefined);
    for (const sentinel of redis.sentinels) {
      const service = byKind(objects, "Service").find((s) => s.metadata.name === sentinel.host);
      const ports = (service?.spec as { ports: Array<{ port: number }> } | undefined)?.ports;
      assert.ok(
        ports?.some((p) => p.port === sentinel.port),
        `${sentinel.host}:${sentinel.port}`,
      );
    }
    const script = byKind(objects, "ConfigMap").find((c) => c.data?.["configure.sh"]);
    assert.match(script?.data?.["configure.sh"] ?? "", new RegExp(`monitor ${redis.name} `));
    const statefulSet = one(objects, "StatefulSet");
    assert.equal((statefulSet.spec as { replicas: number }).replicas, 3);
    // The Deployment uses the overlay's config (generated name with its hash).
    const volume = podSpec(one(objects, "Deployment")).volumes?.find((v) => v.name === "config");
    const configMapName = (volume?.configMap as { name: string }).name;
    assert.ok(byKind(objects, "ConfigMap").some((c) => c.metadata.name === configMapName));
  });

  test("the overlay's Redis bootstrap script is valid sh", async () => {
    const objects = await build("k8s/overlays/redis-sentinel");
    const script = byKind(objects, "ConfigMap").find((c) => c.data?.["configure.sh"]);
    const result = await run("sh", ["-n", "-c", script?.data?.["configure.sh"] ?? "exit 1"]);
    assert.equal(result.code, 0, result.stderr);
  });

  test("the monitoring dashboard ConfigMap carries the Grafana sidecar label", async () => {
    const objects = await build("k8s/monitoring");
    const dashboard = byKind(objects, "ConfigMap").find((c) => c.data?.["sluice.json"]);
    assert.equal(dashboard?.metadata.labels?.grafana_dashboard, "1");
  });
});
