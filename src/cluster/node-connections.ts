/**
 * Every Redis connection of a node carries the node's id in its name (CLIENT SETNAME, sent by
 * ioredis on each connect), so that the other nodes can see in CLIENT LIST whether a silent
 * node still has any connection open (connection-death.ts). Node ids are `[A-Za-z0-9._-]`, so
 * the `/` ends the id unambiguously.
 */
export function nodeConnectionPrefix(nodeId: string): string {
  return `sluice/${nodeId}/`;
}

export function nodeConnectionName(nodeId: string, role: string): string {
  return `${nodeConnectionPrefix(nodeId)}${role}`;
}
