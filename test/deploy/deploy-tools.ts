import { execFile } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Deployment, StatefulSet } from "kubernetes-models/apps/v1";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { ConfigMap, Secret, Service, ServiceAccount } from "kubernetes-models/v1";
import { parseAllDocuments } from "yaml";

/** The repository root (tests run from dist/test/deploy). */
export const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
export const CHART = join(ROOT, "helm/sluice");

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
  [key: string]: unknown;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Finds a tool in the project's .tools/bin (where `npm test` installs the pinned helm and
 * kustomize: scripts/provision.sh), then on PATH. A missing tool fails the tests.
 */
export async function findTool(name: string): Promise<string> {
  const folders = [join(ROOT, ".tools/bin"), ...(process.env.PATH ?? "").split(delimiter)];
  for (const folder of folders.filter(Boolean)) {
    const candidate = join(folder, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this folder
    }
  }
  throw new Error(
    `${name} not found in .tools/bin or on PATH: npm test installs it (scripts/provision.sh)`,
  );
}

/** Runs a command to completion; never throws for a non-zero exit. */
export function run(command: string, args: string[], cwd = ROOT): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { cwd, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error && typeof error.code !== "number") reject(error);
      else resolve({ code: error ? Number(error.code) : 0, stdout, stderr });
    });
  });
}

/** Parses a multi-document YAML stream of Kubernetes objects (empty documents dropped). */
export function parseManifests(text: string): K8sObject[] {
  return parseAllDocuments(text).flatMap((doc) => {
    if (doc.errors.length > 0) throw new Error(`YAML: ${doc.errors[0]?.message}`);
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) return [];
    const object = value as K8sObject;
    if (typeof object.apiVersion !== "string" || typeof object.kind !== "string")
      throw new Error(`not a Kubernetes object: ${JSON.stringify(value).slice(0, 200)}`);
    return [object];
  });
}

type Validator = (object: K8sObject) => void;
const model =
  <T>(Model: new (data: T) => { validate(): void }): Validator =>
  (object) =>
    new Model(object as unknown as T).validate();

const DURATION = /^([0-9]+(ms|s|m|h|d|w|y))+$/;

/** CRDs without a schema package: their structure as the operators document it. */
const crd = {
  ServiceMonitor(object: K8sObject): void {
    const spec = object.spec as {
      selector?: { matchLabels?: Record<string, string> };
      endpoints?: Array<{ port?: string; interval?: string; path?: string }>;
    };
    expect(spec.selector?.matchLabels, "spec.selector.matchLabels");
    expect(spec.endpoints?.length, "spec.endpoints");
    for (const endpoint of spec.endpoints ?? []) {
      expect(endpoint.port, "spec.endpoints[].port");
      if (endpoint.interval !== undefined)
        expect(DURATION.test(endpoint.interval), "spec.endpoints[].interval: a duration");
    }
  },
  PrometheusRule(object: K8sObject): void {
    const groups = (object.spec as { groups?: PrometheusRuleGroup[] }).groups;
    expect(groups?.length, "spec.groups");
    for (const group of groups ?? []) {
      expect(group.name, "spec.groups[].name");
      expect(group.rules.length, "spec.groups[].rules");
      for (const rule of group.rules) {
        expect(rule.alert && /^[A-Za-z_][A-Za-z0-9_]*$/.test(rule.alert), "rules[].alert");
        expect(typeof rule.expr === "string" && rule.expr.length > 0, "rules[].expr");
        if (rule.for !== undefined) expect(DURATION.test(rule.for), "rules[].for: a duration");
        expect(rule.labels?.severity, "rules[].labels.severity");
        expect(rule.annotations?.summary, "rules[].annotations.summary");
      }
    }
  },
  Certificate(object: K8sObject): void {
    const spec = object.spec as {
      secretName?: string;
      issuerRef?: { name?: string; kind?: string };
      dnsNames?: string[];
    };
    expect(spec.secretName, "spec.secretName");
    expect(spec.issuerRef?.name, "spec.issuerRef.name");
    expect(spec.dnsNames?.length, "spec.dnsNames");
  },
};

function expect(value: unknown, what: string): void {
  if (!value) throw new Error(`${what}: missing or invalid`);
}

export interface PrometheusRuleGroup {
  name: string;
  rules: Array<{
    alert?: string;
    expr: string;
    for?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  }>;
}

const VALIDATORS: Record<string, Validator> = {
  "apps/v1/Deployment": model(Deployment),
  "apps/v1/StatefulSet": model(StatefulSet),
  "v1/ConfigMap": model(ConfigMap),
  "v1/Secret": model(Secret),
  "v1/Service": model(Service),
  "v1/ServiceAccount": model(ServiceAccount),
  "policy/v1/PodDisruptionBudget": model(PodDisruptionBudget),
  "autoscaling/v2/HorizontalPodAutoscaler": model(HorizontalPodAutoscaler),
  "networking.k8s.io/v1/NetworkPolicy": model(NetworkPolicy),
  "monitoring.coreos.com/v1/ServiceMonitor": crd.ServiceMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": crd.PrometheusRule,
  "cert-manager.io/v1/Certificate": crd.Certificate,
};

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/**
 * Validates one object against the Kubernetes schema of its kind (kubernetes-models), or the
 * documented structure of a CRD; throws naming the object. Unknown kinds fail too.
 */
export function validateObject(object: K8sObject): void {
  const where = `${object.kind}/${object.metadata?.name}`;
  const validator = VALIDATORS[`${object.apiVersion}/${object.kind}`];
  try {
    if (!validator) throw new Error(`no validator for ${object.apiVersion} ${object.kind}`);
    if (!DNS_LABEL.test(object.metadata.name) || object.metadata.name.length > 63)
      throw new Error("metadata.name: not a DNS label of at most 63 characters");
    for (const value of Object.values(object.metadata.labels ?? {}))
      if (String(value).length > 63) throw new Error(`label value longer than 63: ${value}`);
    validator(object);
  } catch (error) {
    throw new Error(`${where}: ${(error as Error).message}`);
  }
}

export function byKind(objects: readonly K8sObject[], kind: string): K8sObject[] {
  return objects.filter((object) => object.kind === kind);
}

export function one(objects: readonly K8sObject[], kind: string): K8sObject {
  const found = byKind(objects, kind);
  if (found.length !== 1) throw new Error(`expected one ${kind}, found ${found.length}`);
  return found[0] as K8sObject;
}

/** The pod template's spec of a Deployment or StatefulSet. */
export interface PodSpec {
  terminationGracePeriodSeconds?: number;
  containers: Container[];
  initContainers?: Container[];
  volumes?: Array<{ name: string; [key: string]: unknown }>;
  topologySpreadConstraints?: Array<{ topologyKey: string }>;
  affinity?: Record<string, unknown>;
  securityContext?: Record<string, unknown>;
}

export interface Container {
  name: string;
  command?: string[];
  args?: string[];
  env?: Array<{ name: string; value?: string; valueFrom?: Record<string, unknown> }>;
  ports?: Array<{ name?: string; containerPort: number }>;
  readinessProbe?: { httpGet?: { path: string; port: string | number } };
  livenessProbe?: { httpGet?: { path: string; port: string | number } };
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
  securityContext?: Record<string, unknown>;
  volumeMounts?: Array<{ name: string; mountPath: string; subPath?: string }>;
  [key: string]: unknown;
}

export function podSpec(workload: K8sObject): PodSpec {
  return (workload.spec as { template: { spec: PodSpec } }).template.spec;
}

/** Metric names a PromQL expression reads: selectors (`name{`) and known prefixes. */
export function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, "{}")
    .replace(/\[[^\]]*\]/g, "");
  const names = new Set<string>();
  for (const match of bare.matchAll(/([A-Za-z_:][A-Za-z0-9_:]*)\s*\{/g)) names.add(match[1] ?? "");
  for (const match of bare.matchAll(/\b((?:sluice|nodejs|process)_[A-Za-z0-9_:]*)/g))
    names.add(match[1] ?? "");
  names.delete("");
  return [...names];
}
