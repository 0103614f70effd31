import { randomBytes } from "node:crypto";

/**
 * One process of a node: its id, and an instance of its own, which a restart under the same id
 * (a StatefulSet's pod) changes, so that the new process's connections are not taken for the
 * old one's.
 */
export interface NodeInstance {
  readonly nodeId: string;
  readonly instance: string;
}

export function newNodeInstance(nodeId: string): NodeInstance {
  return { nodeId, instance: randomBytes(6).toString("hex") };
}

/**
 * Every Redis connection of a node process carries its id and instance in its name (CLIENT
 * SETNAME, sent by ioredis on each connect), so that the other nodes can see in CLIENT LIST
 * whether a silent node still has any connection open (connection-death.ts). Node ids are
 * `[A-Za-z0-9._-]`, so the `/` ends the id unambiguously.
 */
export function nodeConnectionPrefix(node: NodeInstance): string {
  return `sluice/${node.nodeId}/${node.instance}/`;
}

export function nodeConnectionName(node: NodeInstance, role: string): string {
  return `${nodeConnectionPrefix(node)}${role}`;
}

/** What a node keeps beside its lease: the run id of its Redis server, and its instance. */
export function serverKeyValue(runId: string, node: NodeInstance): string {
  return `${runId}/${node.instance}`;
}

export function parseServerKeyValue(
  value: string,
): { runId: string; instance: string } | undefined {
  const slash = value.indexOf("/");
  if (slash <= 0 || slash === value.length - 1) return undefined;
  return { runId: value.slice(0, slash), instance: value.slice(slash + 1) };
}
