import type { QoS } from "../generator/messages.js";
import { medianOf } from "../report/median.js";
import {
  type CostFigures,
  cpuMicrosPerMessage,
  perMessage,
  readinessSummary,
} from "./cost-probe.js";
import type { LoadCase } from "./measure-brokers.js";
import type { ResultRow, TableCell } from "./scenario.js";

/** A broker's case in the cluster-cost scenario. */
export interface CostKey {
  broker: string;
  /** `rate`: the fixed 5,000 msg/s; `full-speed`: no end-to-end window. */
  kind: "rate" | "full-speed";
  qos: QoS;
}

/** A case as measured: its median round (absent if every round failed) and every round. */
export interface MeasuredCase {
  key: CostKey;
  loadCase: LoadCase;
  row?: ResultRow;
  figures?: CostFigures;
  rounds: Array<{ row: ResultRow; figures: CostFigures }>;
}

export type CostLookup = (key: CostKey) => MeasuredCase | undefined;

interface Figure {
  /** What the figure is, for the `from` column: "µs/msg", "msg/s", ... */
  unit: string;
  value(row: ResultRow, figures: CostFigures): number | null;
}

const NODE_CPU: Figure = {
  unit: "node µs/msg",
  value: (row, figures) => cpuMicrosPerMessage(row, figures, "node"),
};
const REDIS_CPU: Figure = {
  unit: "Redis µs/msg",
  value: (row, figures) => cpuMicrosPerMessage(row, figures, "redis"),
};
const DELIVERED: Figure = { unit: "msg/s", value: (row) => row.messagesPerSecond };
const P99: Figure = { unit: "ms p99", value: (row) => row.p99Ms };
const REDIS_READS: Figure = {
  unit: "Redis reads/msg",
  value: (row, figures) => perMessage(figures.redis?.readSyscalls, row, figures),
};

interface Bound {
  /** "≤ 1.5x", "≥ 1.4x", "< 0.1" */
  text: string;
  holds(value: number): boolean;
}

const atMost = (limit: number, unit = "x"): Bound => ({
  text: `≤ ${limit}${unit}`,
  holds: (v) => v <= limit,
});
const atLeast = (limit: number, unit = "x"): Bound => ({
  text: `≥ ${limit}${unit}`,
  holds: (v) => v >= limit,
});
const under = (limit: number): Bound => ({ text: `< ${limit}`, holds: (v) => v < limit });

const QOS = [0, 1] as const;
const round = (value: number, digits: number): number => Number(value.toFixed(digits));
const label = (kind: CostKey["kind"], qos: QoS): string =>
  `${kind === "rate" ? "5,000 msg/s" : "full speed"}, QoS ${qos}`;

/** Goal rows from the run's figures; a row is only built for cases the run had. */
class GoalBuilder {
  readonly rows: Array<Record<string, TableCell>> = [];

  constructor(
    private readonly lookup: CostLookup,
    private readonly measured: ReadonlySet<string>,
  ) {}

  /** Whether the run had this case on this broker (measured, or tried and failed). */
  private has(key: CostKey): boolean {
    return this.lookup(key) !== undefined;
  }

  private figure(key: CostKey, figure: Figure): number | null {
    const found = this.lookup(key);
    if (!found?.row || !found.figures) return null;
    return figure.value(found.row, found.figures);
  }

  private push(
    measure: string,
    caseLabel: string,
    bound: Bound | string,
    measured: TableCell,
    met: boolean | null,
    from: string,
  ): void {
    this.rows.push({
      measure,
      case: caseLabel,
      goal: typeof bound === "string" ? bound : bound.text,
      measured,
      met,
      from,
    });
  }

  /** figure(numerator) / figure(denominator), same case kind and QoS. */
  ratio(
    measure: string,
    kind: CostKey["kind"],
    qos: QoS,
    numerator: string,
    denominator: string,
    figure: Figure,
    bound: Bound,
  ): void {
    const numeratorKey: CostKey = { broker: numerator, kind, qos };
    const denominatorKey: CostKey = { broker: denominator, kind, qos };
    if (!this.has(numeratorKey) || !this.has(denominatorKey)) return;
    const top = this.figure(numeratorKey, figure);
    const bottom = this.figure(denominatorKey, figure);
    const value = top === null || bottom === null || bottom <= 0 ? null : top / bottom;
    const shown = (v: number | null): string => (v === null ? "?" : String(round(v, 2)));
    this.push(
      measure,
      label(kind, qos),
      bound,
      value === null ? null : round(value, 2),
      value === null ? null : bound.holds(value),
      `${numerator} ${shown(top)} / ${denominator} ${shown(bottom)} ${figure.unit}`,
    );
  }

  /** One broker's figure against an absolute bound. */
  value(
    measure: string,
    kind: CostKey["kind"],
    qos: QoS,
    broker: string,
    figure: Figure,
    bound: Bound,
  ): void {
    const key: CostKey = { broker, kind, qos };
    if (!this.has(key)) return;
    const value = this.figure(key, figure);
    this.push(
      measure,
      label(kind, qos),
      bound,
      value === null ? null : round(value, 3),
      value === null ? null : bound.holds(value),
      `${broker} ${figure.unit}`,
    );
  }

  /** The burst case's outcome for one broker: stayed ready, nothing cut. */
  burstOutcome(broker: string): void {
    const found = this.lookup({ broker, kind: "full-speed", qos: 0 });
    if (!found) return;
    const figures = found?.row ? found.figures : undefined;
    const readiness = readinessSummary(figures?.readiness ?? null);
    this.push(
      "node stays ready",
      label("full-speed", 0),
      "yes",
      readiness.ready,
      readiness.ready,
      `${broker}: not-ready /readyz polls ${readiness.text ?? "?"}`,
    );
    const cuts = figures?.redisOutputBufferCuts;
    const resets = figures?.nodeSubscriptionResets ?? 0;
    const cut = cuts === null || cuts === undefined ? null : cuts + resets;
    this.push(
      "subscriptions cut",
      label("full-speed", 0),
      "0",
      cut,
      cut === null ? null : cut === 0,
      `${broker}: Redis output-buffer cuts + the nodes' subscription resets`,
    );
  }

  /**
   * The median of the rounds' paired ratios: each round measures every broker once, one after
   * the other, so what the machine did to a round reaches both sides of its ratio (connects/s
   * of single rounds scatter 2-3x on a shared machine). Node CPU per connect, steadier, beside.
   */
  connects(
    measure: string,
    numerator: string,
    denominator: string,
    connects: ReadonlyMap<string, ConnectRounds>,
    bound: Bound,
  ): void {
    if (!this.measured.has(numerator) || !this.measured.has(denominator)) return;
    const top = connects.get(numerator);
    const bottom = connects.get(denominator);
    const rates = pairedRatios(top?.rates, bottom?.rates);
    const cpu = pairedRatios(top?.nodeMicros, bottom?.nodeMicros);
    const value = rates.length === 0 ? null : medianOf(rates);
    const listed = (ratios: number[]) => ratios.map((r) => r.toFixed(2)).join(", ");
    const median = (values: ReadonlyArray<number | null> | undefined) => {
      const known = (values ?? []).filter((v): v is number => v !== null);
      return known.length === 0 ? "?" : String(Math.round(medianOf(known)));
    };
    this.push(
      measure,
      "connects",
      bound,
      value === null ? null : round(value, 2),
      value === null ? null : bound.holds(value),
      `rounds' ratios ${listed(rates) || "?"}; medians ${numerator} ${median(top?.rates)} / ${denominator} ${median(bottom?.rates)} connects/s; node µs/connect ${median(top?.nodeMicros)} / ${median(bottom?.nodeMicros)} (rounds' ratios ${listed(cpu) || "?"})`,
    );
  }
}

/** A broker's connects/s and node CPU µs per connect, by round (null: the round failed). */
export interface ConnectRounds {
  rates: ReadonlyArray<number | null>;
  nodeMicros: ReadonlyArray<number | null>;
}

/** top / bottom of each round both measured. */
function pairedRatios(
  top: ReadonlyArray<number | null> | undefined,
  bottom: ReadonlyArray<number | null> | undefined,
): number[] {
  const ratios: number[] = [];
  (top ?? []).forEach((value, i) => {
    const under = bottom?.[i];
    if (value !== null && under !== null && under !== undefined && under > 0)
      ratios.push(value / under);
  });
  return ratios;
}
/**
 * The goal table (issue 14, "Measures"), from this run's figures: for this build, and
 * for the baseline build's nodes where they were measured too.
 */
export function costGoals(
  lookup: CostLookup,
  connects: ReadonlyMap<string, ConnectRounds>,
  measuredBrokers: readonly string[],
): Array<Record<string, TableCell>> {
  const goals = new GoalBuilder(lookup, new Set(measuredBrokers));
  for (const suffix of ["", "-baseline"]) {
    const memory = `sluice${suffix}`;
    const redis = `sluice-redis${suffix}`;
    const build = suffix === "" ? "" : " (baseline build)";
    for (const qos of QOS)
      goals.ratio(
        `node CPU per message, over Redis / in memory${build}`,
        "rate",
        qos,
        redis,
        memory,
        NODE_CPU,
        atMost(1.5),
      );
    for (const qos of QOS)
      goals.ratio(
        `Redis CPU per message, Sluice / stock aedes + plugins${build}`,
        "rate",
        qos,
        redis,
        "aedes-redis",
        REDIS_CPU,
        atMost(1.5),
      );
    if (suffix === "")
      for (const qos of QOS)
        goals.ratio(
          "Redis CPU per message, two Sluice nodes / two stock aedes nodes",
          "rate",
          qos,
          "sluice-cluster-2",
          "aedes-cluster-2",
          REDIS_CPU,
          atMost(1.5),
        );
    goals.burstOutcome(redis);
    goals.ratio(
      `delivered msg/s over Redis, Sluice / stock aedes + plugins${build}`,
      "full-speed",
      0,
      redis,
      "aedes-redis",
      DELIVERED,
      atLeast(1),
    );
    if (suffix === "")
      for (const qos of QOS)
        goals.ratio(
          "two nodes' delivered msg/s / one node over Redis",
          "full-speed",
          qos,
          "sluice-cluster-2",
          redis,
          DELIVERED,
          atLeast(1.4),
        );
    for (const qos of QOS)
      goals.value(
        `Redis read syscalls per message${build}`,
        "full-speed",
        qos,
        redis,
        REDIS_READS,
        under(0.1),
      );
    goals.connects(
      `connects/s, over Redis / in memory${build}`,
      redis,
      memory,
      connects,
      atLeast(0.8),
    );
    goals.connects(
      `connects/s, in memory / bare aedes${build}`,
      memory,
      "aedes",
      connects,
      atLeast(1),
    );
    for (const qos of QOS)
      goals.ratio(
        `p99, over Redis / in memory${build}`,
        "rate",
        qos,
        redis,
        memory,
        P99,
        atMost(2),
      );
  }
  return goals.rows;
}
