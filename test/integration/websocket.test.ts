import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import WebSocket from "ws";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, end } from "../../harness/mqtt-client.js";

let running: RunningNode;
let base: string;
before(async () => {
  running = await startNode({
    listeners: [{ type: "ws", host: "127.0.0.1", port: 0, path: "/plant/mqtt" }],
  });
  base = `127.0.0.1:${new URL(running.urls.ws as string).port}`;
});
after(async () => {
  await running.stop();
});

describe("WebSocket listener", () => {
  it("serves MQTT on the configured path", async () => {
    const client = await connect(`ws://${base}/plant/mqtt`);
    assert.equal(client.connected, true);
    await end(client);
  });

  it("selects the mqtt subprotocol", async () => {
    const ws = new WebSocket(`ws://${base}/plant/mqtt`, ["mqttv3.1", "mqtt"]);
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    assert.equal(ws.protocol, "mqtt");
    ws.terminate();
  });

  it("refuses an upgrade on another path with 404", async () => {
    const ws = new WebSocket(`ws://${base}/other`, "mqtt");
    const status = await new Promise<number>((resolve) => {
      ws.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
      ws.once("error", () => resolve(-1));
    });
    assert.equal(status, 404);
  });

  it("garbage frames close that WebSocket only, and the listener keeps serving", async () => {
    for (const frame of [Buffer.from([0xff, 0x00, 0x13, 0x37]), "not mqtt at all"]) {
      const ws = new WebSocket(`ws://${base}/plant/mqtt`, "mqtt");
      await new Promise<void>((resolve, reject) => {
        ws.once("open", () => resolve());
        ws.once("error", reject);
      });
      const closed = new Promise<void>((resolve) => ws.once("close", () => resolve()));
      ws.send(frame);
      await closed;
    }
    const client = await connect(`ws://${base}/plant/mqtt`);
    assert.equal(client.connected, true);
    await end(client);
  });

  it("answers a plain HTTP request with 426 Upgrade Required", async () => {
    const response = await fetch(`http://${base}/plant/mqtt`);
    assert.equal(response.status, 426);
  });
});
