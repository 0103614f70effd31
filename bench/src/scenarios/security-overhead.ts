import { type SluiceNodeHandle, startSluiceNode } from "../brokers/sluice.js";
import { type LoadResult, runLoad } from "../generator/load-run.js";
import type { ClientSettings } from "../generator/messages.js";
import type { Scenario, ScenarioContext, ScenarioOutput, TableCell } from "./scenario.js";
import { BENCH_USER, createSecurityFixtures, type SecurityFixtures } from "./security-fixtures.js";
import { fullSpeedCase, REFERENCE_SHAPE } from "./throughput.js";

const ACL_RULES = 1_000;

/** One Sluice node's security setup and what a client needs to get through it. */
interface Variant {
  name: string;
  config(f: SecurityFixtures): Record<string, unknown>;
  client(f: SecurityFixtures): Pick<ClientSettings, "tls" | "credentials">;
}

const plainListener = { type: "tcp", host: "127.0.0.1", port: 0 };
const tlsListener = (f: SecurityFixtures) => ({
  type: "tls",
  host: "127.0.0.1",
  port: 0,
  cert: f.certFile,
  key: f.keyFile,
});
const passwords = (f: SecurityFixtures) => ({
  allowAnonymous: false,
  passwordFile: f.passwordFile,
});
const login = (f: SecurityFixtures) => ({
  credentials: { username: BENCH_USER, password: f.password },
});

const VARIANTS: readonly Variant[] = [
  { name: "open", config: () => ({}), client: () => ({}) },
  {
    name: "TLS",
    config: (f) => ({ listeners: [tlsListener(f)] }),
    client: (f) => ({ tls: { caFile: f.caFile } }),
  },
  {
    name: "password auth",
    config: (f) => ({ listeners: [plainListener], auth: passwords(f) }),
    client: login,
  },
  {
    name: `password auth + ACL of ${ACL_RULES.toLocaleString("en-US")} rules`,
    config: (f) => ({ listeners: [plainListener], auth: passwords(f), acl: { file: f.aclFile } }),
    client: login,
  },
  {
    name: "TLS + password auth + ACL",
    config: (f) => ({ listeners: [tlsListener(f)], auth: passwords(f), acl: { file: f.aclFile } }),
    client: (f) => ({ tls: { caFile: f.caFile }, ...login(f) }),
  },
];

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)] ?? 0;
};

async function measureAll(context: ScenarioContext): Promise<Array<Record<string, TableCell>>> {
  const { cleanup, workDir, options, log } = context;
  const fixtures = await createSecurityFixtures(workDir, cleanup, ACL_RULES);
  const variants = options.quick
    ? [VARIANTS[0], VARIANTS[4]].flatMap((v) => (v ? [v] : []))
    : VARIANTS;
  const nodes: Array<SluiceNodeHandle | Error> = [];
  try {
    // All nodes up first, measured in turn round after round, so a ratio compares figures
    // taken close together on a machine whose load drifts.
    for (const [i, variant] of variants.entries())
      nodes.push(
        await startSluiceNode({ cleanup, workDir }, `bench-security-${i}`, {
          config: variant.config(fixtures),
        }).catch((error: unknown) => error as Error),
      );
    const results: LoadResult[][] = variants.map(() => []);
    const errors: string[] = variants.map(() => "");
    for (let round = 0; round < options.rounds; round++)
      // The order rotates each round, so that no configuration always meets the same moment
      // of a drifting machine load (the open node first, say).
      for (const i of variants.map((_, k) => (k + round) % variants.length)) {
        const variant = variants[i];
        if (!variant) continue;
        const node = nodes[i];
        if (!node || node instanceof Error) {
          errors[i] = node?.message ?? "not started";
          continue;
        }
        try {
          const result = await runLoad(
            {
              ...fullSpeedCase(options, 1, 64),
              publisherUrls: [node.url],
              subscriberUrls: [node.url],
              ...variant.client(fixtures),
            },
            cleanup,
            { watch: node.process ? [node.process] : [] },
          );
          results[i]?.push(result);
          log(`[security-overhead] ${variant.name}: ${Math.round(result.messagesPerSecond)} msg/s`);
        } catch (error) {
          errors[i] = (error as Error).message;
        }
      }
    const rate = (i: number): number => median((results[i] ?? []).map((r) => r.messagesPerSecond));
    const open = rate(0);
    return variants.map((variant, i) => {
      const runs = results[i] ?? [];
      const pick = (f: (r: LoadResult) => number): number | null =>
        runs.length === 0 ? null : median(runs.map(f));
      return {
        configuration: variant.name,
        "msg/s": runs.length === 0 ? null : Math.round(rate(i)),
        "x open": runs.length === 0 || open === 0 ? null : Number((rate(i) / open).toFixed(2)),
        "p50 ms": pick((r) => r.latency.p50Ms),
        "p99 ms": pick((r) => r.latency.p99Ms),
        "broker CPU %": pick((r) => r.processCpu.broker ?? 0),
        lost: runs.reduce((n, r) => n + r.lost, 0),
        duplicates: runs.reduce((n, r) => n + r.duplicates, 0),
        "each round msg/s": runs.map((r) => Math.round(r.messagesPerSecond)).join(", "),
        error: errors[i] ?? "",
      };
    });
  } finally {
    await Promise.allSettled(nodes.map((n) => (n instanceof Error ? undefined : n.stop())));
  }
}

export const securityOverhead: Scenario = {
  name: "security-overhead",
  description:
    "the throughput case (QoS 1, 64 B, 10 -> 10, one Sluice node) with TLS, password auth and a 1,000-rule ACL, against the open node",
  inDefaultSet: false,
  async run(context): Promise<ScenarioOutput> {
    const rows = await measureAll(context);
    return {
      rows: [],
      tables: [
        {
          title: "security-overhead: QoS 1, 64 B, 10 publishers -> 10 subscribers, one Sluice node",
          columns: [
            "configuration",
            "msg/s",
            "x open",
            "p50 ms",
            "p99 ms",
            "broker CPU %",
            "lost",
            "duplicates",
            "each round msg/s",
            "error",
          ],
          rows,
          notes: [
            "TLS: a throwaway CA and server certificate made with openssl at run time, TLS 1.2+ (Node's defaults), the generator verifies the chain",
            "password auth: a password file with one user hashed by src/security/password-hash.ts (scrypt); the cost is per CONNECT, so a throughput run mostly measures TLS and the ACL",
            `ACL: ${ACL_RULES.toLocaleString("en-US")} rules for the bench user, the only one allowing its topics last: every publish and delivery is checked against all`,
            "figures are the median round (with an even count, the lower middle one); the variants are measured in turn within each round, so a ratio compares figures taken close together",
          ],
        },
      ],
      config: {
        qos: 1,
        payloadBytes: 64,
        shape: REFERENCE_SHAPE,
        aclRules: ACL_RULES,
        warmupMs: context.options.warmupMs,
        measureMs: context.options.measureMs,
        rounds: context.options.rounds,
      },
    };
  },
};
