import type { QoS } from "../generator/messages.js";

/** One entry of `--phases`: a phase of a scenario, optionally narrowed to one QoS ("rate:0"). */
export interface PhasePick {
  phase: string;
  qos?: QoS;
}

/** A phase a scenario has, and whether its cases go by QoS (so `name:1` can pick one). */
export interface PhaseName {
  name: string;
  byQos: boolean;
}

/**
 * The `--phases` entries a scenario runs, checked against the phases it has: every problem is
 * reported at once, naming the phases it knows. An empty list selects everything.
 */
export function parsePhases(entries: readonly string[], known: readonly PhaseName[]): PhasePick[] {
  const problems: string[] = [];
  const picks: PhasePick[] = [];
  for (const entry of entries) {
    const [phase = "", qosText, ...rest] = entry.split(":");
    const found = known.find((k) => k.name === phase);
    if (!found) problems.push(`unknown phase "${phase}"`);
    else if (qosText === undefined && rest.length === 0) picks.push({ phase });
    else if (!found.byQos) problems.push(`"${entry}": ${phase} has no cases by QoS`);
    else if (rest.length > 0 || !/^[0-2]$/.test(qosText ?? ""))
      problems.push(`"${entry}": a phase is narrowed to one QoS (0, 1 or 2), as ${phase}:1`);
    else picks.push({ phase, qos: Number(qosText) as QoS });
  }
  if (problems.length > 0) {
    const names = known.map((k) => (k.byQos ? `${k.name}[:QoS]` : k.name)).join(", ");
    throw new Error(`--phases: ${problems.join("; ")}; this scenario's phases: ${names}`);
  }
  return picks;
}

/**
 * Of a phase's QoS levels (`levels`, its default cases), the ones the selection runs: all of
 * them when nothing is selected or the phase is named without a QoS, those named with one
 * (even outside the defaults: `--quick` leaves some out), none when the phase is not named.
 */
export function selectedLevels(
  picks: readonly PhasePick[],
  phase: string,
  levels: readonly QoS[],
): QoS[] {
  if (picks.length === 0) return [...levels];
  const named = picks.filter((p) => p.phase === phase);
  if (named.some((p) => p.qos === undefined)) return [...levels];
  return [...new Set(named.flatMap((p) => (p.qos === undefined ? [] : [p.qos])))];
}

/** Whether a phase without cases by QoS runs under the selection. */
export function runsPhase(picks: readonly PhasePick[], phase: string): boolean {
  return picks.length === 0 || picks.some((p) => p.phase === phase);
}
