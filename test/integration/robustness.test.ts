import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, end, Inbox, type MqttClient, subscribe } from "../../harness/mqtt-client.js";
import {
  closedByPeer,
  connectPacket,
  packet,
  rawConnect,
  readBytes,
  remainingLength,
} from "../../harness/raw-socket.js";

const MAX_PACKET = 4096;
let running: RunningNode;
let port: number;

before(async () => {
  running = await startNode({ limits: { maxPacketBytes: MAX_PACKET, connectTimeoutMs: 500 } });
  port = Number(new URL(running.urls.tcp as string).port);
});
after(async () => {
  await running.stop();
});

async function metric(name: string): Promise<number> {
  const text = await fetch(`${running.httpUrl}/metrics`).then((r) => r.text());
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `))
      sum += Number(line.split(" ").pop());
  }
  return sum;
}

/** Proves the node still serves: a full publish/subscribe round trip. */
async function assertServing(): Promise<void> {
  const client = await connect(running.urls.tcp as string);
  try {
    const inbox = new Inbox(client);
    await subscribe(client, "health/check", 1);
    await client.publishAsync("health/check", "alive", { qos: 1 });
    const [message] = await inbox.waitFor(1);
    assert.equal(message?.payload.toString(), "alive");
  } finally {
    await end(client);
  }
}

describe("robustness against hostile or broken clients", () => {
  it("garbage bytes close that connection only", async () => {
    const socket = await rawConnect(port);
    const closed = closedByPeer(socket);
    socket.write(randomBytes(512));
    await closed;
    await assertServing();
  });

  it("a truncated CONNECT is dropped when connectTimeoutMs expires", async () => {
    const socket = await rawConnect(port);
    const closed = closedByPeer(socket);
    const whole = connectPacket("truncated");
    socket.write(whole.subarray(0, whole.length - 4));
    await closed;
    await assertServing();
  });

  it("a header announcing a 256 MB packet is refused before the body is buffered", async () => {
    const before = await metric("sluice_protocol_errors_total");
    const socket = await rawConnect(port);
    const closed = closedByPeer(socket);
    // PUBLISH with the largest remaining length MQTT can express (268,435,455 bytes).
    socket.write(
      Buffer.concat([Buffer.from([0x30]), remainingLength(268_435_455), Buffer.alloc(1024)]),
    );
    const reply = await closed;
    assert.equal(reply.length, 0, "nothing is answered");
    assert.equal(await metric("sluice_protocol_errors_total"), before + 1);
    await assertServing();
  });

  it("a connected client sending a packet over maxPacketBytes is disconnected", async () => {
    const client = await connect(running.urls.tcp as string);
    const closed = new Promise<void>((resolve) => client.once("close", () => resolve()));
    client.publish("big/one", Buffer.alloc(MAX_PACKET + 1));
    await closed;
    await end(client);
    await assertServing();
  });

  it("a packet just under maxPacketBytes is delivered", async () => {
    const client = await connect(running.urls.tcp as string);
    try {
      const inbox = new Inbox(client);
      await subscribe(client, "big/ok", 1);
      // fixed header 3 bytes + topic 2+6 + packet id 2 = 13 bytes around the payload.
      const payload = Buffer.alloc(MAX_PACKET - 13, 7);
      await client.publishAsync("big/ok", payload, { qos: 1 });
      const [message] = await inbox.waitFor(1);
      assert.equal(message?.payload.length, payload.length);
    } finally {
      await end(client);
    }
  });

  it("200 abrupt disconnects leave the node serving and the connection gauge at zero", async () => {
    const clients: MqttClient[] = [];
    for (let i = 0; i < 200; i++)
      clients.push(await connect(running.urls.tcp as string, { clientId: `abrupt-${i}` }));
    const closed = clients.map(
      (c) => new Promise<void>((resolve) => c.once("close", () => resolve())),
    );
    for (const client of clients) client.stream.destroy();
    await Promise.all(closed);
    await end(...clients);
    await assertServing();
    // The gauge settles as the node processes the closes; bounded polling of the scrape.
    let open = await metric("sluice_connections");
    for (let attempt = 0; open !== 0 && attempt < 100; attempt++) {
      await new Promise((resolve) => setImmediate(resolve));
      open = await metric("sluice_connections");
    }
    assert.equal(open, 0);
  });

  it("a QoS 0 flood from ten clients at once does not crash the node (mqemitter recursion)", async () => {
    const subscriber = await connect(running.urls.tcp as string);
    await subscribe(subscriber, "flood0/#", 0);
    // 20,000 QoS 0 PUBLISH packets per client, written at once: the emitter queues most of them,
    // and used to take each queued one a stack frame deeper until the process died.
    const topic = Buffer.from("flood0/x");
    const publish = packet(
      0x30,
      Buffer.concat([Buffer.from([0, topic.length]), topic, Buffer.from("p")]),
    );
    const burst = Buffer.concat(Array.from({ length: 20_000 }, () => publish));
    const pingreq = packet(0xc0, Buffer.alloc(0));
    const flooders = await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        const socket = await rawConnect(port);
        socket.write(connectPacket(`flooder-${i}`));
        await readBytes(socket, 4);
        return socket;
      }),
    );
    try {
      // A client's packets are handled in order: its PINGRESP comes after all its PUBLISHes.
      const pongs = flooders.map((socket) => {
        const pong = new Promise<void>((resolve) => {
          socket.on("data", (chunk: Buffer) => {
            if (chunk.includes(0xd0)) resolve();
          });
        });
        socket.write(Buffer.concat([burst, pingreq]));
        return pong;
      });
      await Promise.all(pongs);
      await assertServing();
    } finally {
      for (const socket of flooders) socket.destroy();
      await end(subscriber);
    }
  });

  it("an answer to a valid CONNECT over a raw socket is a CONNACK accepted", async () => {
    const socket = await rawConnect(port);
    socket.write(connectPacket("raw-ok"));
    const connack = await readBytes(socket, 4);
    assert.deepEqual([...connack], [0x20, 0x02, 0x00, 0x00]);
    socket.write(packet(0xe0, Buffer.alloc(0)));
    await closedByPeer(socket);
  });
});
