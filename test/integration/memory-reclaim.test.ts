import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import mqttPacket from "mqtt-packet";
import { withDeadline } from "../../harness/deadline.js";
import { metricValue } from "../../harness/node-metrics.js";
import { connectPacket, rawConnect, readBytes } from "../../harness/raw-socket.js";
import { SluiceProcess } from "../../harness/sluice-process.js";

/**
 * A node process without --expose-gc: 1,200 clients with 100 subscriptions each leave at once,
 * and the used heap comes back to its baseline without any forced collection from outside, as
 * an idle node's would not (V8 runs no major GC without allocation).
 */
const CLIENTS = 1_200;
const FILTERS = 100;
/** The bench's criterion: back within 16 MiB of the baseline. */
const SLACK_BYTES = 16 * 1024 * 1024;

let dir: string;
let node: SluiceProcess;
let port: number;
let httpPort: number;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-reclaim-"));
  const file = join(dir, "node.yaml");
  await writeFile(
    file,
    "listeners: [{ type: tcp, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: 0 }\n" +
      "auth: { allowAnonymous: true }\nshutdown: { drainSeconds: 0 }\nlog: { level: info, format: json }\n",
  );
  node = SluiceProcess.spawn(["start", "--config", file], { SLUICE_LOG_LEVEL: "info" });
  const ready = await node.ready();
  port = Number(ready.ports.tcp);
  httpPort = ready.httpPort;
});
after(async () => {
  node?.kill("SIGKILL");
  await node?.exited;
  await rm(dir, { recursive: true, force: true });
});

function heapUsed(): Promise<number> {
  return metricValue(`http://127.0.0.1:${httpPort}`, "nodejs_heap_size_used_bytes");
}

/** Connects and subscribes to `FILTERS` filters in one SUBSCRIBE; resolves once SUBACKed. */
async function subscribed(index: number): Promise<Socket> {
  const socket = await rawConnect(port);
  const subscriptions = Array.from({ length: FILTERS }, (_, i) => ({
    topic: `reclaim/${index}/cmd/${i}`,
    qos: 1 as const,
  }));
  const suback = mqttPacket.generate({ cmd: "subscribe", messageId: 1, subscriptions });
  const answer = readBytes(socket, 4 + 4 + FILTERS);
  socket.write(Buffer.concat([connectPacket(`reclaim-${index}`, { keepalive: 0 }), suback]));
  const bytes = await answer;
  assert.equal(bytes[3], 0, "CONNACK accepted");
  return socket;
}

describe("memory after a mass departure", () => {
  it("the heap returns to its baseline once the clients have left", async () => {
    const baseline = await heapUsed();
    assert.ok(baseline > 0, "the node reports its heap");
    const sockets: Socket[] = [];
    for (let first = 0; first < CLIENTS; first += 100) {
      sockets.push(
        ...(await Promise.all(Array.from({ length: 100 }, (_, i) => subscribed(first + i)))),
      );
    }
    const peak = await heapUsed();
    const disconnect = mqttPacket.generate({ cmd: "disconnect" });
    await Promise.all(
      sockets.map(
        (socket) =>
          new Promise<void>((resolve) => {
            socket.once("close", () => resolve());
            socket.end(disconnect);
          }),
      ),
    );
    // Back within seconds: through the node's collection after the departure, or V8's own if
    // one ran meanwhile (the node then needs none).
    let after = Number.POSITIVE_INFINITY;
    await withDeadline(
      (async () => {
        for (;;) {
          after = await heapUsed();
          if (after - baseline <= SLACK_BYTES) return;
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
      })(),
      15_000,
      `heap back within 16 MiB of ${Math.round(baseline / 1_048_576)} MiB (peak ${Math.round(peak / 1_048_576)} MiB)`,
    );
    assert.ok(after - baseline <= SLACK_BYTES);
    const reclaimed = node.lines.find((l) => l.event === "memory.reclaimed");
    if (reclaimed) assert.equal(reclaimed.departed, CLIENTS, "one collection for the whole wave");
  });
});
