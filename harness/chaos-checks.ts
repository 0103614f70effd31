import mqtt from "mqtt";
import type { ChaosCluster } from "./chaos-cluster.js";
import { RETAINED_TOPICS } from "./chaos-workload.js";
import type { History } from "./history.js";

/**
 * After the heal: what every node holds, into the history. Live connections per client id are
 * summed over the nodes' own belief (their logs); retained messages are read from each node
 * straight (not through the load balancer) by a fresh clean-session client.
 */
export async function observeAfterHeal(
  cluster: ChaosCluster,
  history: History,
  run: string,
): Promise<void> {
  const live = new Map<string, number>();
  for (const node of cluster.nodes) {
    for (const [clientId, count] of cluster.heldBy(node.name)) {
      if (clientId.startsWith(run)) live.set(clientId, (live.get(clientId) ?? 0) + count);
    }
  }
  for (const [clientId, count] of live) history.liveConnections(clientId, count);
  // The nodes are read one after the other, and a retained publisher's last messages of an
  // outage may still land meanwhile (a run that did not settle): read again while they differ.
  const until = Date.now() + RETAINED_CONVERGE_MS;
  let views: Map<string, Map<string, string>>;
  do {
    views = new Map();
    for (const node of cluster.nodes) {
      views.set(node.name, await readRetained(node.url, `${run}/retained/#`, RETAINED_TOPICS));
    }
  } while (!sameViews([...views.values()]) && Date.now() < until);
  for (const [node, retained] of views) {
    for (let i = 0; i < RETAINED_TOPICS; i++) {
      const topic = `${run}/retained/r${i}`;
      history.retained(node, topic, retained.get(topic));
    }
  }
}

/** How long the nodes' retained messages may take to agree after the heal. */
const RETAINED_CONVERGE_MS = 5_000;

function sameViews(views: ReadonlyArray<Map<string, string>>): boolean {
  const [first, ...rest] = views;
  if (first === undefined) return true;
  return rest.every(
    (view) =>
      view.size === first.size &&
      [...first].every(([topic, payload]) => view.get(topic) === payload),
  );
}

/** The retained messages under `filter`, once `count` arrived or after 5 s. */
async function readRetained(
  url: string,
  filter: string,
  count: number,
): Promise<Map<string, string>> {
  const client = mqtt.connect(url, { reconnectPeriod: 0, protocolVersion: 4, clean: true });
  client.on("error", () => {});
  const retained = new Map<string, string>();
  try {
    await new Promise<void>((resolve, reject) => {
      client.once("connect", () => resolve());
      client.once("error", reject);
    });
    const all = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 5_000);
      client.on("message", (topic, payload) => {
        retained.set(topic, payload.toString());
        if (retained.size >= count) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    await client.subscribeAsync(filter, { qos: 1 });
    await all;
  } finally {
    client.end(true);
  }
  return retained;
}

/** How long acknowledgements of the last shared deliveries may take to reach Redis. */
const SHARED_ACKS_MS = 5_000;

/**
 * After the run settled: what Redis still holds for the shared group (its members' queues and
 * its backlog), into the history; nothing once the members' last acknowledgements are recorded.
 * Read again every 100 ms until it is empty or 5 s passed: Redis announces no such change.
 */
export async function observeSharedAfterHeal(
  cluster: ChaosCluster,
  history: History,
  group: string,
): Promise<void> {
  const deadline = Date.now() + SHARED_ACKS_MS;
  for (;;) {
    const left = (await cluster.sharedEntries()).get(group) ?? 0;
    if (left === 0 || Date.now() >= deadline) {
      history.shared.left(group, left);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
