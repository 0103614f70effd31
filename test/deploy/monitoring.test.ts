import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { RedisServer } from "../../harness/redis-server.js";
import {
  CHART,
  findTool,
  metricNames,
  one,
  type PrometheusRuleGroup,
  parseManifests,
  ROOT,
  run,
} from "./deploy-tools.js";

/** Prometheus' own series, which no exporter sends. */
const PROMETHEUS_SERIES = new Set(["up"]);
const SUFFIXES: Record<string, string[]> = {
  histogram: ["_bucket", "_sum", "_count"],
  summary: ["_sum", "_count", ""],
};

/** Every series name a /metrics text declares or holds (labelled counters with no series yet too). */
function exportedNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split("\n")) {
    const declared = /^# TYPE (\S+) (\S+)/.exec(line);
    if (declared) {
      const [, name, type] = declared as unknown as [string, string, string];
      for (const suffix of SUFFIXES[type] ?? [""]) names.add(`${name}${suffix}`);
    } else if (line !== "" && !line.startsWith("#")) {
      names.add(line.split(/[{ ]/)[0] ?? "");
    }
  }
  return names;
}

interface Dashboard {
  panels: Array<{ title: string; targets?: Array<{ expr: string }> }>;
  templating: { list: Array<{ definition?: string }> };
}

function dashboardQueries(dashboard: Dashboard): string[] {
  return [
    ...dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)),
    ...dashboard.templating.list.flatMap((v) => (v.definition ? [v.definition] : [])),
  ];
}

let redis: RedisServer;
let node: RunningNode;
let exported: Set<string>;

before(async () => {
  redis = await RedisServer.start();
  node = await startNode({ redis: { url: redis.url, keyPrefix: `deploy-${process.pid}:` } });
  const response = await fetch(`${node.httpUrl}/metrics`);
  exported = exportedNames(await response.text());
});

after(async () => {
  await node?.stop();
  await redis?.stop();
});

type Rule = PrometheusRuleGroup["rules"][number];

async function chartRules(): Promise<Rule[]> {
  const helm = await findTool("helm");
  const result = await run(helm, [
    "template",
    "sluice",
    CHART,
    "--set",
    "metrics.prometheusRule.enabled=true",
  ]);
  assert.equal(result.code, 0, result.stderr);
  const rule = one(parseManifests(result.stdout), "PrometheusRule");
  return (rule.spec as { groups: PrometheusRuleGroup[] }).groups.flatMap((g) => g.rules);
}

function k8sRules(): Rule[] {
  const text = readFileSync(join(ROOT, "k8s/monitoring/prometheusrule.yaml"), "utf8");
  const rule = one(parseManifests(text), "PrometheusRule");
  return (rule.spec as { groups: PrometheusRuleGroup[] }).groups.flatMap((g) => g.rules);
}

function assertExported(where: string, expr: string): void {
  const names = metricNames(expr);
  assert.ok(names.length > 0, `${where}: reads no metric: ${expr}`);
  for (const name of names)
    assert.ok(
      exported.has(name) || PROMETHEUS_SERIES.has(name),
      `${where}: ${name} is not a metric a Sluice node exports`,
    );
}

describe("monitoring uses only metrics a live node exports", () => {
  test("the live node exports the contract's metrics and prom-client's", () => {
    for (const name of [
      "sluice_redis_up",
      "sluice_redis_subscription_resets_total",
      "sluice_fenced",
      "sluice_redis_round_trip_seconds_bucket",
      "sluice_session_ownership_conflicts_total",
      "sluice_cluster_nodes",
      "sluice_auth_failures_total",
      "sluice_connections_rejected_total",
      "nodejs_eventloop_lag_p99_seconds",
      "process_resident_memory_bytes",
    ])
      assert.ok(exported.has(name), name);
  });

  test("the check catches a name no node exports", () => {
    assert.throws(
      () => assertExported("probe", 'rate(sluice_made_up_total{job="x"}[5m])'),
      /sluice_made_up_total is not a metric/,
    );
    assert.deepEqual(metricNames('sum by (reason) (rate(a_total{b="c{"}[5m])) > 1'), ["a_total"]);
  });

  test("the chart's PrometheusRule", async () => {
    for (const r of await chartRules()) assertExported(r.alert ?? "rule", r.expr);
  });

  test("k8s/monitoring's PrometheusRule", () => {
    for (const r of k8sRules()) assertExported(r.alert ?? "rule", r.expr);
  });

  test("both PrometheusRules raise the same alerts, a cut Redis subscription among them", async () => {
    const alerts = (rules: Rule[]) => rules.map((r) => r.alert).sort();
    const chart = alerts(await chartRules());
    assert.deepEqual(alerts(k8sRules()), chart);
    assert.ok(chart.includes("SluiceRedisSubscriptionReset"));
    assert.ok(chart.includes("SluiceNodeFenced"));
  });

  test("the dashboard parses, is the same in the chart and k8s/, and every query is sound", () => {
    const chartCopy = readFileSync(join(CHART, "dashboards/sluice.json"), "utf8");
    const k8sCopy = readFileSync(join(ROOT, "k8s/monitoring/sluice-dashboard.json"), "utf8");
    assert.equal(
      k8sCopy,
      chartCopy,
      "k8s/monitoring/sluice-dashboard.json differs from the chart's",
    );
    const dashboard = JSON.parse(chartCopy) as Dashboard;
    const queries = dashboardQueries(dashboard);
    assert.ok(queries.length >= 20);
    for (const query of queries) assertExported("dashboard", query);
  });
});
