import { availableParallelism } from "node:os";
import { parseArgs } from "node:util";
import { parseNodeCpu } from "../../harness/cpu-cgroup.js";
import { ALL_BROKERS, findBroker } from "./brokers/catalog.js";
import type { RunOptions } from "./scenarios/scenario.js";

export const USAGE = `Usage: npm run bench -- [SCENARIO...] [options]
       (no scenario: the default set, throughput and latency; npm run bench builds first)

Scenarios:
  throughput, latency         message rates and latency against Mosquitto and bare aedes
  connections                 connects/s and broker RSS per idle connection (10,000; quick 500)
  storm                       2-node cluster, SIGKILL one, its clients reconnect (10,000; quick 300)
  subscribe-storm             N clients x M filters subscribed at once: subscriptions/s, a
                              bystander's QoS 1 p99; then all leave at once: the bystander's
                              p99 and the node's loop stalls meanwhile, gauge and heap after
                              (2,000 x 100; quick 100 x 20)
  failover                    3 nodes behind HAProxy, QoS 1 persistent pairs, SIGKILL mid-stream
  security-overhead           QoS 1 throughput with TLS, password auth, 1,000-rule ACL vs open
  flood                       PLC fleet's p99 with and without attackers, recommended PLC limits
                              (sluice and sluice-redis, 15 s windows; --quick: 3 s windows,
                              sluice only unless --brokers names both)
  cluster-cost                CPU µs per delivered message of each node and of Redis, Redis
                              commands/reads/bytes per message, at 5,000 msg/s and at full
                              speed with no end-to-end window (readiness, cut subscriptions),
                              connects/s: sluice, sluice-redis, sluice-cluster-2, aedes-redis,
                              aedes-cluster-2 (+ the *-baseline ones with SLUICE_BASELINE_CLI);
                              --quick: one case per phase, 200 clients, the --quick brokers
  mqtt5                       MQTT 5 clients against 3.1.1 clients on the same broker, back
                              to back in each round: full speed (QoS 0, 1, 64 B) and p99 at
                              5,000 msg/s, ratios v5/v3.1.1 against issue 15's goals (>= 0.9x,
                              <= 1.2x): sluice, sluice-redis, mosquitto (a reference); --quick:
                              full speed QoS 0 and 5,000 msg/s QoS 1, the --quick brokers
  shared                      shared subscriptions ($share), QoS 1, members spread over two
                              nodes: full speed with 1 and 4 members against a normal
                              subscription, 1/2/4 members at 4 ms per message (scale-out),
                              p50/p99 at 2,000 msg/s, publishers faster than the broker
                              (drops, member queues, memory): sluice-cluster-2, mosquitto;
                              --quick: 4 cases, sluice-cluster-2
  chaos                       network faults under QoS 0/1/2 load (issue 17; root: network
                              namespaces, nftables): node-Redis cuts 200 ms, 5 s, 60 s and one
                              way, +50/+500 ms, 5 % loss, node-LB cut, one client id on both
                              sides, Sentinel failover, Redis restart without data (about 5
                              min); --quick: three short ones

Options:
  --quick                     a smoke run of a few seconds per broker (also BENCH_QUICK=1):
                              1 s windows, 64 B only, brokers mosquitto, aedes, sluice
  --brokers a,b,...           brokers to measure (${ALL_BROKERS.map((b) => b.name).join(", ")}; the
                              *-baseline ones run the build SLUICE_BASELINE_CLI names)
  --warmup-seconds N          load before each measurement window (default 0.75)
  --measure-seconds N         each measurement window (default 1.5)
  --rounds N                  measurements per case and broker, median reported (default 2)
  --phases a,b,...            only these phases of the scenario (those that have phases), a
                              phase with cases by QoS narrowed with :QoS; cluster-cost: rate,
                              full-speed, connects (e.g. --phases connects, or rate:0,connects)
  --node-cpu CORES            each broker node process (Sluice, bare aedes, Mosquitto) in a
                              cgroup of its own with a CFS quota of CORES (e.g. 0.4), Redis
                              and the generators outside: one node against each of two nodes
                              on the same CPU; root, cgroup v1 cpu controller at
                              /sys/fs/cgroup/cpu; cluster-cost, throughput, latency, mqtt5
  --publisher-processes N     generator processes for publishers (default 1)
  --subscriber-processes N    generator processes for subscribers (default 1)
  --cross-check anchor|all|none   independent tools on 64 B cases (anchor), all, or none
  --clients N                 clients of connections/storm, pairs of failover (default 10,000 / 10)
  --filters N                 filters per client of subscribe-storm (default 100)
  --client raw|mqtt.js        the mqtt5 scenario's load clients (default raw: the same cost per
                              message to the generator at both levels)
  --results DIR               where JSON, SVG and Markdown go (default bench/results)
  --max-minutes N             hard limit for the whole invocation (default 20)
  -h, --help`;

export interface CliOptions {
  scenarios: string[];
  run: RunOptions;
  resultsDir: string | undefined;
  maxMinutes: number;
  help: boolean;
}

function positiveNumber(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed <= 0)
    throw new Error(`--${name} must be a positive number`);
  return parsed;
}

/** A comma-separated option's entries, blanks dropped. */
function listOf(value: string): string[] {
  return value
    .split(",")
    .map((entry) => entry.trim())
    .filter(Boolean);
}

export function parseCli(argv: string[], env: NodeJS.ProcessEnv): CliOptions {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      quick: { type: "boolean", default: false },
      brokers: { type: "string" },
      "warmup-seconds": { type: "string" },
      "measure-seconds": { type: "string" },
      rounds: { type: "string" },
      "publisher-processes": { type: "string" },
      "subscriber-processes": { type: "string" },
      "cross-check": { type: "string" },
      results: { type: "string" },
      clients: { type: "string" },
      filters: { type: "string" },
      client: { type: "string" },
      "max-minutes": { type: "string" },
      phases: { type: "string" },
      "node-cpu": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const quick = values.quick === true || env.BENCH_QUICK === "1";
  const crossCheck = values["cross-check"] ?? (quick ? "none" : "anchor");
  if (crossCheck !== "anchor" && crossCheck !== "all" && crossCheck !== "none")
    throw new Error("--cross-check must be anchor, all or none");
  const client = values.client;
  if (client !== undefined && client !== "raw" && client !== "mqtt.js")
    throw new Error("--client must be raw or mqtt.js");
  const brokerNames =
    (values.brokers === undefined ? undefined : listOf(values.brokers)) ??
    (quick ? ["mosquitto", "aedes", "sluice"] : []);
  return {
    scenarios: positionals,
    run: {
      quick,
      warmupMs:
        positiveNumber(values["warmup-seconds"], "warmup-seconds", quick ? 0.5 : 0.75) * 1000,
      measureMs:
        positiveNumber(values["measure-seconds"], "measure-seconds", quick ? 1 : 1.5) * 1000,
      rounds: Math.round(positiveNumber(values.rounds, "rounds", quick ? 1 : 2)),
      brokers: brokerNames.map(findBroker),
      publisherProcesses: Math.round(
        positiveNumber(values["publisher-processes"], "publisher-processes", 1),
      ),
      subscriberProcesses: Math.round(
        positiveNumber(values["subscriber-processes"], "subscriber-processes", 1),
      ),
      crossCheck,
      ...(values.clients === undefined
        ? {}
        : { clients: Math.round(positiveNumber(values.clients, "clients", 1)) }),
      ...(values.filters === undefined
        ? {}
        : { filters: Math.round(positiveNumber(values.filters, "filters", 1)) }),
      ...(client === undefined ? {} : { clientKind: client }),
      ...(values.phases === undefined ? {} : { phases: listOf(values.phases) }),
      ...(values["node-cpu"] === undefined
        ? {}
        : { nodeCpu: parseNodeCpu(values["node-cpu"], availableParallelism()) }),
    },
    resultsDir: values.results,
    maxMinutes: positiveNumber(values["max-minutes"], "max-minutes", 20),
    help: values.help === true,
  };
}
