import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import mqtt from "mqtt";
import { HaProxy } from "../../harness/haproxy.js";
import { Inbox } from "../../harness/mqtt-client.js";
import { RedisServer } from "../../harness/redis-server.js";
import { SluiceProcess } from "../../harness/sluice-process.js";

/**
 * The mission's promise: a node dies (SIGKILL) mid-stream behind a real load balancer, its
 * clients reconnect through it to the others, and no message the broker acknowledged is lost.
 */
const MESSAGES = 1_000;
const KILL_AFTER = 300;
const WINDOW = 20;
const DELIVERY_GRACE_MS = 20_000;

let dir: string;
let redis: RedisServer;
const nodes: SluiceProcess[] = [];
let lb: HaProxy;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-failover-"));
  redis = await RedisServer.start();
  const prefix = `f${randomBytes(4).toString("hex")}:`;
  const started = [];
  // Four nodes: each scenario takes one away and the last one needs somewhere to go.
  for (const name of ["fo-1", "fo-2", "fo-3", "fo-4"]) {
    const file = join(dir, `${name}.yaml`);
    await writeFile(
      file,
      `nodeId: ${name}\nlisteners: [{ type: tcp, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: 0 }\n` +
        `auth: { allowAnonymous: true }\nshutdown: { drainSeconds: 0 }\nlog: { level: debug, format: json }\n` +
        `redis: { url: "${redis.url}", keyPrefix: "${prefix}" }\n`,
    );
    const node = SluiceProcess.spawn(["start", "--config", file]);
    nodes.push(node);
    started.push(
      node
        .ready()
        .then(({ ports, httpPort }) => ({ name, mqttPort: ports.tcp as number, httpPort })),
    );
  }
  lb = await HaProxy.start(await Promise.all(started));
});
after(async () => {
  await lb?.stop();
  for (const node of nodes) node.kill();
  await Promise.all(nodes.map((n) => n.exited));
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** The live node where this client id connected last (log times tell which is latest). */
function currentHolder(clientId: string): SluiceProcess | undefined {
  let best: { node: SluiceProcess; time: number } | undefined;
  for (const node of nodes) {
    if (node.child.exitCode !== null || node.child.signalCode !== null) continue;
    for (const line of node.lines) {
      if (line.event !== "client.connected" || line.clientId !== clientId) continue;
      const time = Number(line.time);
      if (!best || time > best.time) best = { node, time };
    }
  }
  return best?.node;
}

describe("failover behind HAProxy", () => {
  const scenarios = [
    { target: "publisher", signal: "SIGKILL" },
    { target: "subscriber", signal: "SIGKILL" },
    // A rolling upgrade: the node drains its clients (drainSeconds 0 here) and exits.
    { target: "publisher", signal: "SIGTERM" },
  ] as const;
  for (const { target, signal } of scenarios) {
    it(`${signal} of the ${target}'s node mid-stream loses no acknowledged QoS 1 message`, async () => {
      const victim = `fo-${target.slice(0, 3)}-${signal.slice(3, 7).toLowerCase()}`;
      const options = {
        reconnectPeriod: 100,
        connectTimeout: 5_000,
        protocolVersion: 4 as const,
        clean: false,
      };
      const subscriber = mqtt.connect(lb.url, { ...options, clientId: `${victim}-subscriber` });
      const inbox = new Inbox(subscriber);
      await new Promise<void>((resolve) => subscriber.once("connect", () => resolve()));
      await subscriber.subscribeAsync(`fo/${victim}`, { qos: 1 });
      const publisher = mqtt.connect(lb.url, { ...options, clientId: `${victim}-publisher` });
      await new Promise<void>((resolve) => publisher.once("connect", () => resolve()));

      const acknowledged = new Set<number>();
      let killedAt = 0;
      let resumedAt = 0;
      let next = 1;
      const publishOne = async (): Promise<void> => {
        while (next <= MESSAGES) {
          const seq = next++;
          const sentAt = Date.now();
          await publisher.publishAsync(`fo/${victim}`, String(seq), { qos: 1 });
          acknowledged.add(seq);
          // Resumed: the first acknowledgement of a message sent after the kill.
          if (killedAt > 0 && resumedAt === 0 && sentAt > killedAt) resumedAt = Date.now();
          if (acknowledged.size === KILL_AFTER && killedAt === 0) {
            const holder = currentHolder(`${victim}-${target}`);
            assert.ok(holder, `the ${target}'s node is known from its log`);
            killedAt = Date.now();
            holder.kill(signal);
          }
        }
      };
      await Promise.all(Array.from({ length: WINDOW }, publishOne));
      assert.equal(acknowledged.size, MESSAGES);
      assert.ok(killedAt > 0, "a node was killed mid-stream");

      // Every acknowledged message must arrive; wait for the last, bounded by the test timeout.
      const seen = new Map<number, number>();
      const count = (): void => {
        seen.clear();
        for (const m of inbox.received) {
          const seq = Number(m.payload.toString());
          seen.set(seq, (seen.get(seq) ?? 0) + 1);
        }
      };
      const missing = () => [...acknowledged].filter((seq) => !seen.has(seq));
      count();
      // Loss can only be declared after a quiet spell: give redelivery DELIVERY_GRACE_MS.
      const deadline = Date.now() + DELIVERY_GRACE_MS;
      while (missing().length > 0 && Date.now() < deadline) {
        const wait = deadline - Date.now();
        await Promise.race([
          inbox.waitFor(inbox.received.length + 1),
          new Promise((resolve) => setTimeout(resolve, wait).unref()),
        ]);
        count();
      }
      const duplicates = [...seen.values()].reduce((sum, count) => sum + count - 1, 0);
      assert.deepEqual(missing(), [], `acknowledged messages lost: ${missing().length}`);
      // Figures for the record (QoS 1 allows duplicates after a failover).
      process.stdout.write(
        `# failover (${signal} to the ${target}'s node): ${MESSAGES} acknowledged, 0 lost, ${duplicates} duplicates, ` +
          `publishing resumed ${resumedAt - killedAt} ms after the kill\n`,
      );
      publisher.end(true);
      subscriber.end(true);
    });
  }
});
