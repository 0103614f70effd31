import { Counter, Gauge, type Registry } from "prom-client";

/** The Sparkplug series of a node (DESIGN.md: edge nodes online, births, deaths, refused payloads per group). */
export interface SparkplugSeries {
  edgeNodesOnline: Gauge<"group">;
  births: Counter<"group" | "kind">;
  deaths: Counter<"group" | "kind">;
  refused: Counter<"group" | "reason">;
}

export function sparkplugSeries(registry: Registry): SparkplugSeries {
  const registers = [registry];
  return {
    edgeNodesOnline: new Gauge({
      name: "sluice_sparkplug_edge_nodes_online",
      help: "Sparkplug edge nodes connected to this node that have sent an NBIRTH and no NDEATH since, by group (sum over nodes for the cluster)",
      labelNames: ["group"],
      registers,
    }),
    births: new Counter({
      name: "sluice_sparkplug_births_total",
      help: "Sparkplug births (kind node: NBIRTH, device: DBIRTH) received by this node, by group",
      labelNames: ["group", "kind"],
      registers,
    }),
    deaths: new Counter({
      name: "sluice_sparkplug_deaths_total",
      help: "Sparkplug deaths (kind node: NDEATH, device: DDEATH) published by this node, wills included, by group",
      labelNames: ["group", "kind"],
      registers,
    }),
    refused: new Counter({
      name: "sluice_sparkplug_refused_total",
      help: "PUBLISHes under spBv1.0/ or $sparkplug/ refused, by group and reason (identity, command, state, topic, certificate: identity binding; malformed, bdseq, state_format: payload validation)",
      labelNames: ["group", "reason"],
      registers,
    }),
  };
}
