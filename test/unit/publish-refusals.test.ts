import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Aedes, type Client, type PublishPacket } from "aedes";
import type { IConnackPacket, IPubackPacket, IPubrecPacket } from "mqtt-packet";
import { duplexPair } from "../../harness/duplex-pair.js";
import { publish, WireClient } from "../../harness/wire-client.js";
import { adaptHooks } from "../../src/engine/hook-adapter.js";
import { PayloadInvalidError, PublishQuotaExceededError } from "../../src/errors.js";

/**
 * A publish hook's refusals as clients see them, on the patched engine: MQTT 5 gets PUBACK /
 * PUBREC with the refusal's reason code alone, MQTT 3.1.1 a plain
 * acknowledgement; the message is dropped and the connection stays.
 */
describe("publish refusals from a hook", () => {
  let broker: Aedes;
  const delivered: string[] = [];
  before(async () => {
    const hooks = adaptHooks(
      {
        preConnect() {},
        authenticate() {},
        authorizePublish(_client: Client | null, packet: PublishPacket) {
          if (packet.topic === "sparkplug/bad") throw new PayloadInvalidError(packet.topic);
          if (packet.topic === "metered/over") throw new PublishQuotaExceededError(packet.topic);
        },
        authorizeSubscribe: (_client, subscription) => subscription,
        authorizeForward: (_client, packet) => packet,
      },
      { onUnexpectedError: (hook, error) => assert.fail(`${hook}: ${String(error)}`) },
    );
    broker = await Aedes.createBroker({ ...hooks });
    broker.on("publish", (packet, client) => {
      if (client) delivered.push(packet.topic);
    });
  });
  after(() => new Promise<void>((resolve) => broker.close(() => resolve())));

  async function connected(version: 4 | 5, clientId: string): Promise<WireClient> {
    const { server, client } = duplexPair();
    broker.handle(server);
    const wire = new WireClient(client, version);
    wire.send({ cmd: "connect", protocolVersion: version, clientId, keepalive: 60, clean: true });
    const connack = (await wire.waitFor("CONNACK", (p) => p.cmd === "connack")) as IConnackPacket;
    assert.equal(version === 5 ? connack.reasonCode : connack.returnCode, 0);
    return wire;
  }

  it("payload invalid: v5 PUBACK 0x99 and PUBREC 0x99, the code alone; v3.1.1 plain acks", async () => {
    const v5 = await connected(5, "pi-5");
    v5.send(publish("sparkplug/bad", "x", 1, 1), publish("sparkplug/bad", "x", 2, 2));
    const puback = (await v5.waitFor("PUBACK", (p) => p.cmd === "puback")) as IPubackPacket;
    const pubrec = (await v5.waitFor("PUBREC", (p) => p.cmd === "pubrec")) as IPubrecPacket;
    assert.equal(puback.reasonCode, 0x99);
    assert.equal(pubrec.reasonCode, 0x99);
    // No Reason String on acknowledgements: the code alone (see hook-adapter.ts).
    assert.equal(puback.properties, undefined);
    const v4 = await connected(4, "pi-4");
    v4.send(publish("sparkplug/bad", "x", 1, 1));
    const plain = (await v4.waitFor("PUBACK", (p) => p.cmd === "puback")) as IPubackPacket;
    assert.equal(plain.reasonCode, undefined);
    await v5.roundTrip();
    await v4.roundTrip();
    assert.deepEqual(delivered, []);
    v5.stream.destroy();
    v4.stream.destroy();
  });

  it("quota exceeded: v5 PUBACK 0x97, the code alone, whatever the client asked for", async () => {
    const v5 = await connected(5, "q-5");
    v5.send(publish("metered/over", "x", 1, 1));
    const puback = (await v5.waitFor("PUBACK", (p) => p.cmd === "puback")) as IPubackPacket;
    assert.equal(puback.reasonCode, 0x97);
    assert.equal(puback.properties, undefined);
    const { server, client } = duplexPair();
    broker.handle(server);
    const quiet = new WireClient(client, 5);
    quiet.send({
      cmd: "connect",
      protocolVersion: 5,
      clientId: "q-quiet",
      keepalive: 60,
      clean: true,
      properties: { requestProblemInformation: false },
    });
    await quiet.waitFor("CONNACK", (p) => p.cmd === "connack");
    quiet.send(publish("metered/over", "x", 1, 1));
    const bare = (await quiet.waitFor("PUBACK", (p) => p.cmd === "puback")) as IPubackPacket;
    assert.equal(bare.reasonCode, 0x97);
    assert.equal(bare.properties, undefined);
    v5.stream.destroy();
    quiet.stream.destroy();
  });
});
