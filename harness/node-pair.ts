import { randomBytes } from "node:crypto";
import { type RunningNode, startNode } from "./in-process-node.js";
import { RedisServer } from "./redis-server.js";

/** Two in-process nodes, `node-a` and `node-b`, sharing a fresh Redis under a random prefix. */
export interface NodePair {
  redis: RedisServer;
  keyPrefix: string;
  a: RunningNode;
  b: RunningNode;
  stop(): Promise<void>;
}

export async function startNodePair(): Promise<NodePair> {
  const redis = await RedisServer.start();
  const keyPrefix = `p${randomBytes(4).toString("hex")}:`;
  const nodes: RunningNode[] = [];
  const stop = async () => {
    for (const node of nodes) await node.stop();
    await redis.stop();
  };
  try {
    for (const nodeId of ["node-a", "node-b"]) {
      nodes.push(await startNode({ nodeId, redis: { url: redis.url, keyPrefix } }));
    }
  } catch (error) {
    await stop();
    throw error;
  }
  const [a, b] = nodes as [RunningNode, RunningNode];
  return { redis, keyPrefix, a, b, stop };
}
