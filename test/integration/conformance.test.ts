import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, connectWithConnack, end, Inbox, subscribe } from "../../harness/mqtt-client.js";
import {
  closedByPeer,
  connectPacket,
  mqttString,
  packet,
  rawConnect,
  readBytes,
} from "../../harness/raw-socket.js";

/**
 * MQTT 3.1.1 behaviour where aedes alone departs from the spec, each case naming its clause.
 * Raw sockets are used where a well-behaved client library would refuse to send the bytes.
 */
let running: RunningNode;
let port: number;
before(async () => {
  running = await startNode();
  port = Number(new URL(running.urls.tcp as string).port);
});
after(async () => {
  await running.stop();
});

const INVALID_UTF8 = Buffer.from([0x61, 0xc3, 0x28]); // 0xC3 must be followed by a continuation byte
const ENCODED_SURROGATE = Buffer.from([0xed, 0xa0, 0x80]); // U+D800, never valid in UTF-8
const WITH_NULL = Buffer.from([0x61, 0x00, 0x62]);

/** Sends a CONNECT and returns the CONNACK's [session present, return code]. */
async function rawConnack(
  bytes: Buffer,
): Promise<{ sessionPresent: number; returnCode: number; socket: import("node:net").Socket }> {
  const socket = await rawConnect(port);
  socket.write(bytes);
  const ack = await readBytes(socket, 4);
  assert.equal(ack[0], 0x20, "a CONNACK");
  return { sessionPresent: ack[2] ?? -1, returnCode: ack[3] ?? -1, socket };
}

/** Connects over a raw socket and waits for CONNACK accepted. */
async function rawSession(clientId: string): Promise<import("node:net").Socket> {
  const { returnCode, socket } = await rawConnack(connectPacket(clientId));
  assert.equal(returnCode, 0);
  return socket;
}

function publishPacket(topic: Buffer | string, payload = Buffer.from("x")): Buffer {
  return packet(0x30, Buffer.concat([mqttString(topic), payload]));
}

function subscribePacket(filter: Buffer | string, messageId = 1): Buffer {
  const id = Buffer.alloc(2);
  id.writeUInt16BE(messageId);
  return packet(0x82, Buffer.concat([id, mqttString(filter), Buffer.from([0])]));
}

describe("protocol level [MQTT-3.1.2-2]", () => {
  for (const level of [7, 99, 0x80 | 9]) {
    it(`level ${level} gets CONNACK 0x01 (unacceptable protocol version), then the connection closes`, async () => {
      const socket = await rawConnect(port);
      const closed = closedByPeer(socket);
      socket.write(connectPacket(`level-${level}`, { level }));
      assert.deepEqual([...(await closed)], [0x20, 0x02, 0x00, 0x01]);
    });
  }

  it("is counted as a protocol error, and the node serves the next client", async () => {
    const socket = await rawConnect(port);
    const closed = closedByPeer(socket);
    socket.write(connectPacket("level-count", { level: 6 }));
    await closed;
    const metrics = await fetch(`${running.httpUrl}/metrics`).then((r) => r.text());
    assert.match(
      metrics,
      /sluice_protocol_errors_total\{reason="unsupported_protocol_level"[^}]*\} [1-9]/,
    );
    const client = await connect(running.urls.tcp as string, { clientId: "after-level" });
    await end(client);
  });
});

describe("client identifier [MQTT-3.1.3]", () => {
  it("a zero-length client id with clean session 0 gets CONNACK 2 and is closed [MQTT-3.1.3-8]", async () => {
    const { returnCode, sessionPresent, socket } = await rawConnack(
      connectPacket("", { clean: false }),
    );
    assert.equal(returnCode, 2);
    assert.equal(sessionPresent, 0);
    await closedByPeer(socket);
  });

  it("a zero-length client id with clean session 1 is assigned an id and accepted [MQTT-3.1.3-6]", async () => {
    const { returnCode, socket } = await rawConnack(connectPacket("", { clean: true }));
    assert.equal(returnCode, 0);
    socket.destroy();
  });
});

describe("UTF-8 strings [MQTT-1.5.3]", () => {
  const cases: Array<[string, Buffer]> = [
    ["malformed UTF-8", INVALID_UTF8],
    ["an encoded surrogate", ENCODED_SURROGATE],
  ];
  for (const [what, bytes] of cases) {
    it(`${what} in a PUBLISH topic closes the connection [MQTT-1.5.3-1]`, async () => {
      const socket = await rawSession(`utf8-pub-${bytes[1]}`);
      const closed = closedByPeer(socket);
      socket.write(publishPacket(bytes));
      await closed;
    });

    it(`${what} in a SUBSCRIBE filter closes the connection [MQTT-1.5.3-1]`, async () => {
      const socket = await rawSession(`utf8-sub-${bytes[1]}`);
      const closed = closedByPeer(socket);
      socket.write(subscribePacket(bytes));
      const answer = await closed;
      assert.equal(answer.length, 0, "no SUBACK");
    });

    it(`${what} in a will topic refuses the CONNECT [MQTT-1.5.3-1]`, async () => {
      const socket = await rawConnect(port);
      const closed = closedByPeer(socket);
      socket.write(
        connectPacket(`utf8-will-${bytes[1]}`, {
          will: { topic: bytes, payload: Buffer.from("x") },
        }),
      );
      assert.equal((await closed).length, 0, "no CONNACK");
    });

    it(`${what} in a client id refuses the CONNECT [MQTT-1.5.3-1]`, async () => {
      const socket = await rawConnect(port);
      const closed = closedByPeer(socket);
      socket.write(connectPacket(bytes));
      assert.equal((await closed).length, 0, "no CONNACK");
    });
  }

  it("U+0000 in a topic closes the connection [MQTT-1.5.3-2]", async () => {
    const socket = await rawSession("utf8-null");
    const closed = closedByPeer(socket);
    socket.write(publishPacket(WITH_NULL));
    await closed;
  });

  it("a valid multi-byte topic is delivered intact", async () => {
    const client = await connect(running.urls.tcp as string);
    try {
      const inbox = new Inbox(client);
      await subscribe(client, "Pumpwerk/Müllheim/温度", 1);
      await client.publishAsync("Pumpwerk/Müllheim/温度", "21", { qos: 1 });
      const [message] = await inbox.waitFor(1);
      assert.equal(message?.topic, "Pumpwerk/Müllheim/温度");
    } finally {
      await end(client);
    }
  });

  it("a malformed packet from one client leaves the others connected", async () => {
    const bystander = await connect(running.urls.tcp as string);
    try {
      const socket = await rawSession("utf8-victim");
      const closed = closedByPeer(socket);
      socket.write(publishPacket(INVALID_UTF8));
      await closed;
      const inbox = new Inbox(bystander);
      await subscribe(bystander, "still/there", 0);
      await bystander.publishAsync("still/there", "yes", { qos: 1 });
      assert.equal((await inbox.waitFor(1))[0]?.payload.toString(), "yes");
    } finally {
      await end(bystander);
    }
  });
});

describe("topics", () => {
  it("#, +/... do not match topics beginning with $ [MQTT-4.7.2-1]", async () => {
    const client = await connect(running.urls.tcp as string);
    try {
      const inbox = new Inbox(client);
      await subscribe(client, "#", 0);
      await subscribe(client, "+/info", 0);
      await client.publishAsync("$custom/info", "hidden", { qos: 1 });
      await client.publishAsync("plain/info", "seen", { qos: 1 });
      const [first] = await inbox.waitFor(1);
      assert.equal(first?.topic, "plain/info");
    } finally {
      await end(client);
    }
  });

  it("a publish to $SYS is acknowledged but dropped; the client stays connected", async () => {
    const client = await connect(running.urls.tcp as string);
    try {
      const inbox = new Inbox(client);
      await subscribe(client, "sys-probe/#", 1);
      await client.publishAsync("$SYS/broker/forged", "x", { qos: 1 }); // resolves on PUBACK
      await client.publishAsync("sys-probe/after", "y", { qos: 1 });
      assert.equal((await inbox.waitFor(1))[0]?.topic, "sys-probe/after");
      assert.equal(client.connected, true);
    } finally {
      await end(client);
    }
  });

  it("wildcards in a PUBLISH topic close the connection [MQTT-3.3.2-2]", async () => {
    const socket = await rawSession("wild-pub");
    const closed = closedByPeer(socket);
    socket.write(publishPacket("a/+/b"));
    await closed;
  });
});

describe("keepalive [MQTT-3.1.2-24]", () => {
  it("closes a client silent for 1.5 x keepalive and publishes its will", async () => {
    const watcher = await connect(running.urls.tcp as string);
    try {
      const inbox = new Inbox(watcher);
      await subscribe(watcher, "keepalive/will", 0);
      const socket = await rawConnect(port);
      const started = Date.now();
      socket.write(
        connectPacket("silent-one", {
          keepalive: 1,
          will: { topic: "keepalive/will", payload: Buffer.from("gone") },
        }),
      );
      await readBytes(socket, 4);
      await closedByPeer(socket);
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= 1_400, `closed after ${elapsed} ms, not before 1.5 s`);
      const [will] = await inbox.waitFor(1);
      assert.equal(will?.payload.toString(), "gone");
    } finally {
      await end(watcher);
    }
  });
});

describe("session present flag [MQTT-3.2.2]", () => {
  /** Connects with MQTT.js and returns the CONNACK's session-present flag, then disconnects. */
  async function sessionPresent(clientId: string, clean: boolean): Promise<boolean> {
    const { client, sessionPresent } = await connectWithConnack(running.urls.tcp as string, {
      clientId,
      clean,
    });
    await client.endAsync();
    return sessionPresent;
  }

  it("reports a stored session even when it has no subscriptions [MQTT-3.2.2-2]", async () => {
    assert.equal(
      await sessionPresent("sp-nosubs", false),
      false,
      "first connection: nothing stored",
    );
    assert.equal(await sessionPresent("sp-nosubs", false), true, "second connection resumes it");
  });

  it("is 0 with clean session 1, which also discards the stored session [MQTT-3.2.2-1] [MQTT-3.1.2-6]", async () => {
    assert.equal(await sessionPresent("sp-clean", false), false);
    assert.equal(await sessionPresent("sp-clean", true), false);
    assert.equal(
      await sessionPresent("sp-clean", false),
      false,
      "the clean connection discarded the session",
    );
  });
});

describe("QoS of deliveries [MQTT-3.8.4-6]", () => {
  it("a wildcard subscription never receives a higher QoS than it was granted", async () => {
    const subscriber = await connect(running.urls.tcp as string);
    const publisher = await connect(running.urls.tcp as string);
    try {
      const inbox = new Inbox(subscriber);
      await subscribe(subscriber, "qd/one/+", 1);
      await subscribe(subscriber, "qd/zero/#", 0);
      await publisher.publishAsync("qd/one/x", "2->1", { qos: 2 });
      await publisher.publishAsync("qd/zero/x", "1->0", { qos: 1 });
      const messages = await inbox.waitFor(2);
      const qos = Object.fromEntries(messages.map((m) => [m.topic, m.packet.qos]));
      assert.deepEqual(qos, { "qd/one/x": 1, "qd/zero/x": 0 });
    } finally {
      await end(subscriber, publisher);
    }
  });

  it("a retained message is sent at no more than the QoS granted to the matching filter", async () => {
    const publisher = await connect(running.urls.tcp as string);
    await publisher.publishAsync("qr/a", "kept", { qos: 2, retain: true });
    await end(publisher);
    const subscriber = await connect(running.urls.tcp as string);
    try {
      const inbox = new Inbox(subscriber);
      await subscriber.subscribeAsync({ "qr/#": { qos: 0 }, "other/#": { qos: 2 } });
      const [message] = await inbox.waitFor(1);
      assert.equal(message?.topic, "qr/a");
      assert.equal(message?.packet.qos, 0);
      assert.equal(message?.packet.retain, true);
    } finally {
      await end(subscriber);
    }
  });
});

describe("packet order on one connection [MQTT-4.6.0-6]", () => {
  it("a PUBLISH followed by a SUBSCRIBE in one write reaches the subscription only as the retained copy", async () => {
    const socket = await rawSession("order-pub-sub");
    const retainedPublish = packet(0x31, Buffer.concat([mqttString("order/a"), Buffer.from("v")])); // QoS 0, retain
    socket.write(Buffer.concat([retainedPublish, subscribePacket("order/a", 7)]));
    // Expect SUBACK (5 bytes), then exactly one PUBLISH with the retain flag set.
    const suback = await readBytes(socket, 5);
    assert.deepEqual([...suback], [0x90, 0x03, 0x00, 0x07, 0x00]);
    const publish = await readBytes(socket, 2 + 2 + "order/a".length + 1);
    assert.equal(publish[0], 0x31, "PUBLISH QoS 0 with RETAIN=1 [MQTT-3.3.1-8]");
    // A marker proves nothing else is queued behind: PINGREQ -> PINGRESP must be next.
    socket.write(packet(0xc0, Buffer.alloc(0)));
    assert.deepEqual([...(await readBytes(socket, 2))], [0xd0, 0x00]);
    socket.destroy();
  });

  it("a SUBSCRIBE followed by a PUBLISH in one write delivers the message", async () => {
    const socket = await rawSession("order-sub-pub");
    socket.write(
      Buffer.concat([subscribePacket("order/b", 9), publishPacket("order/b", Buffer.from("w"))]),
    );
    const suback = await readBytes(socket, 5);
    assert.deepEqual([...suback], [0x90, 0x03, 0x00, 0x09, 0x00]);
    const publish = await readBytes(socket, 2 + 2 + "order/b".length + 1);
    assert.equal(publish[0], 0x30, "live PUBLISH, RETAIN=0 [MQTT-3.3.1-9]");
    assert.equal(publish.subarray(4, 11).toString(), "order/b");
    socket.destroy();
  });
});

describe("CONNECT validation", () => {
  const refusedWithoutConnack = async (bytes: Buffer): Promise<void> => {
    const socket = await rawConnect(port);
    const closed = closedByPeer(socket);
    socket.write(bytes);
    assert.equal((await closed).length, 0, "closed without a CONNACK");
  };

  it("a will topic that is empty or has wildcards is refused [MQTT-3.1.2-9] [MQTT-4.7.3-1]", async () => {
    for (const topic of ["", "alarms/#", "alarms/+/x"]) {
      await refusedWithoutConnack(
        connectPacket(`bad-will-${topic.length}`, { will: { topic, payload: Buffer.from("x") } }),
      );
    }
  });

  it("protocol name and level must agree [MQTT-3.1.2-1]", async () => {
    const mqtt31AsLevel4 = connectPacket("mixed-1");
    // Rewrite "MQTT" level 4 into "MQTT" level 3 (name offset 2..8, level at byte 8).
    const level3 = Buffer.from(mqtt31AsLevel4);
    level3[8] = 3;
    await refusedWithoutConnack(level3);
  });

  it("a second CONNECT closes the connection [MQTT-3.1.0-2]", async () => {
    const socket = await rawSession("twice");
    const closed = closedByPeer(socket);
    socket.write(connectPacket("twice"));
    await closed;
  });

  it("a first packet other than CONNECT closes the connection [MQTT-3.1.0-1]", async () => {
    await refusedWithoutConnack(packet(0xc0, Buffer.alloc(0)));
  });
});

describe("SUBSCRIBE and UNSUBSCRIBE validation", () => {
  for (const filter of ["a+", "a/+b", "a#", "+#", "a/#/b", "a+/b"]) {
    it(`the malformed filter ${JSON.stringify(filter)} closes the connection [MQTT-4.7.1-2] [MQTT-4.7.1-3]`, async () => {
      const socket = await rawSession(`filter-${filter}`);
      const closed = closedByPeer(socket);
      socket.write(subscribePacket(filter));
      assert.equal((await closed).length, 0, "no SUBACK");
    });
  }

  it("packet identifier 0 closes the connection [MQTT-2.3.1-1]", async () => {
    const socket = await rawSession("id-zero");
    const closed = closedByPeer(socket);
    socket.write(subscribePacket("ok/filter", 0));
    assert.equal((await closed).length, 0, "no SUBACK");
  });

  it("an UNSUBSCRIBE without a filter closes the connection [MQTT-3.10.3-2]", async () => {
    const socket = await rawSession("unsub-empty");
    const closed = closedByPeer(socket);
    socket.write(packet(0xa2, Buffer.from([0x00, 0x05])));
    assert.equal((await closed).length, 0, "no UNSUBACK");
  });
});

describe("no message lost or duplicated by the engine", () => {
  it("a QoS 1 retained message followed at once by a QoS 0 one: both delivered", async () => {
    const subscriber = await connect(running.urls.tcp as string);
    const publisher = await connect(running.urls.tcp as string);
    try {
      const inbox = new Inbox(subscriber);
      await subscribe(subscriber, "overtake/#", 1);
      publisher.publish("overtake/slow", "retained", { qos: 1, retain: true });
      publisher.publish("overtake/fast", "plain", { qos: 0 });
      const topics = (await inbox.waitFor(2)).map((m) => m.topic).sort();
      assert.deepEqual(topics, ["overtake/fast", "overtake/slow"]);
    } finally {
      await end(subscriber, publisher);
    }
  });

  it("two publishers interleaving QoS 1 and retained messages: every one arrives", async () => {
    const subscriber = await connect(running.urls.tcp as string);
    const publishers = [
      await connect(running.urls.tcp as string),
      await connect(running.urls.tcp as string),
    ];
    try {
      const inbox = new Inbox(subscriber);
      await subscribe(subscriber, "interleave/#", 1);
      const perPublisher = 200;
      await Promise.all(
        publishers.map((p, n) =>
          Promise.all(
            Array.from({ length: perPublisher }, (_, i) =>
              p.publishAsync(`interleave/${n}/${i % 5}`, `${n}:${i}`, {
                qos: 1,
                retain: i % 3 === 0,
              }),
            ),
          ),
        ),
      );
      const received = await inbox.waitFor(2 * perPublisher);
      assert.equal(new Set(received.map((m) => m.payload.toString())).size, 2 * perPublisher);
    } finally {
      await end(subscriber, ...publishers);
    }
  });

  it("overlapping subscriptions include a copy at the highest granted QoS [MQTT-3.3.5-1]", async () => {
    const subscriber = await connect(running.urls.tcp as string);
    try {
      const inbox = new Inbox(subscriber);
      await subscriber.subscribeAsync({ "ov/#": { qos: 0 }, "ov/+": { qos: 2 } });
      await subscriber.publishAsync("ov/x", "max", { qos: 2 });
      const copies = await inbox.waitFor(2);
      assert.deepEqual(copies.map((m) => m.packet.qos).sort(), [0, 2]);
    } finally {
      await end(subscriber);
    }
  });

  it("a QoS 2 duplicate in the same read is acknowledged but delivered once [MQTT-4.3.3-2]", async () => {
    const watcher = await connect(running.urls.tcp as string);
    try {
      const inbox = new Inbox(watcher);
      await subscribe(watcher, "exactly/#", 2);
      const socket = await rawSession("qos2-dup");
      const body = Buffer.concat([
        mqttString("exactly/once"),
        Buffer.from([0x01, 0x2c]),
        Buffer.from("v"),
      ]);
      socket.write(Buffer.concat([packet(0x34, body), packet(0x3c, body)])); // QoS 2, then DUP + QoS 2
      const pubrecs = await readBytes(socket, 8);
      assert.deepEqual([...pubrecs], [0x50, 0x02, 0x01, 0x2c, 0x50, 0x02, 0x01, 0x2c]);
      socket.write(packet(0x62, Buffer.from([0x01, 0x2c]))); // PUBREL
      assert.deepEqual([...(await readBytes(socket, 4))], [0x70, 0x02, 0x01, 0x2c]); // PUBCOMP
      // A later marker proves no second copy is on its way.
      await watcher.publishAsync("exactly/marker", "m", { qos: 2 });
      const messages = await inbox.waitFor(2);
      assert.deepEqual(
        messages.map((m) => m.topic),
        ["exactly/once", "exactly/marker"],
      );
      socket.destroy();
    } finally {
      await end(watcher);
    }
  });

  it("the publisher's DUP flag is not forwarded [MQTT-3.3.1-3]", async () => {
    const watcher = await connect(running.urls.tcp as string);
    try {
      const inbox = new Inbox(watcher);
      await subscribe(watcher, "dupflag", 1);
      const socket = await rawSession("dup-sender");
      socket.write(
        packet(
          0x3a,
          Buffer.concat([mqttString("dupflag"), Buffer.from([0x00, 0x07]), Buffer.from("d")]),
        ),
      );
      const [message] = await inbox.waitFor(1);
      assert.equal(message?.packet.dup, false);
      socket.destroy();
    } finally {
      await end(watcher);
    }
  });

  it("messages on $ topics are not queued for offline wildcard subscribers [MQTT-4.7.2-1]", async () => {
    const clientId = "offline-dollar";
    const first = await connect(running.urls.tcp as string, { clientId, clean: false });
    await subscribe(first, "#", 1);
    await first.endAsync();
    const publisher = await connect(running.urls.tcp as string);
    await publisher.publishAsync("$app/status", "hidden", { qos: 1 });
    await publisher.publishAsync("app/status", "queued", { qos: 1 });
    await end(publisher);
    const mqtt = (await import("mqtt")).default;
    const back = mqtt.connect(running.urls.tcp as string, {
      clientId,
      clean: false,
      reconnectPeriod: 0,
    });
    const inbox = new Inbox(back);
    try {
      const [message] = await inbox.waitFor(1);
      assert.equal(message?.topic, "app/status");
      // The marker proves nothing else was queued ahead of or behind it.
      await back.publishAsync("app/marker", "m", { qos: 1 });
      const messages = await inbox.waitFor(2);
      assert.deepEqual(
        messages.map((m) => m.topic),
        ["app/status", "app/marker"],
      );
    } finally {
      await end(back);
    }
  });
});
