import { randomBytes } from "node:crypto";
import { type RunningNode, startNode } from "./in-process-node.js";
import { connect, type MqttClient } from "./mqtt-client.js";
import { RedisRelay } from "./redis-relay.js";
import { RedisServer } from "./redis-server.js";

/** Two in-process nodes, `node-a` and `node-b`, sharing a fresh Redis under a random prefix. */
export interface NodePair {
  redis: RedisServer;
  keyPrefix: string;
  a: RunningNode;
  b: RunningNode;
  /** With `relayA`: node A's way to Redis, whose commands a test can hold. */
  relay: RedisRelay | undefined;
  stop(): Promise<void>;
}

/**
 * `relayA`: node A reaches Redis through a RedisRelay (a stopped or cut-off node's commands
 * held), node B directly.
 */
export async function startNodePair(options: { relayA?: boolean } = {}): Promise<NodePair> {
  const redis = await RedisServer.start();
  const keyPrefix = `p${randomBytes(4).toString("hex")}:`;
  const nodes: RunningNode[] = [];
  let relay: RedisRelay | undefined;
  const stop = async () => {
    relay?.releaseCommands();
    for (const node of nodes) await node.stop();
    await relay?.close();
    await redis.stop();
  };
  try {
    if (options.relayA) relay = await RedisRelay.start(redis.port);
    for (const [nodeId, url] of [
      ["node-a", relay?.url ?? redis.url],
      ["node-b", redis.url],
    ] as const) {
      nodes.push(await startNode({ nodeId, redis: { url, keyPrefix } }));
    }
  } catch (error) {
    await stop();
    throw error;
  }
  const [a, b] = nodes as [RunningNode, RunningNode];
  return { redis, keyPrefix, a, b, relay, stop };
}

/**
 * A persistent-session publisher on `first` that, at each reconnection, goes to the next of
 * its servers (mqtt.js' `servers`): `first`, then `then`, as a load balancer moving it would.
 */
export async function connectMovingPublisher(
  first: RunningNode,
  then: RunningNode,
  clientId: string,
): Promise<MqttClient> {
  const port = (node: RunningNode) => Number(new URL(node.urls.tcp as string).port);
  const publisher = await connect(first.urls.tcp as string, {
    clientId,
    clean: false,
    reconnectPeriod: 100,
    servers: [
      { host: "127.0.0.1", port: port(first) },
      { host: "127.0.0.1", port: port(then) },
    ],
  });
  publisher.on("error", () => {});
  return publisher;
}
