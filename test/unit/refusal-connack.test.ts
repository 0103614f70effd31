import assert from "node:assert/strict";
import { describe, it } from "node:test";
import mqttPacket, { type IConnackPacket, type IConnectPacket } from "mqtt-packet";
import { ReasonCode } from "../../src/errors.js";
import { readConnectHead, refusalConnack } from "../../src/protocol/refusal-connack.js";

const MAX = 512;

function connect(options: Partial<IConnectPacket>): Buffer {
  return mqttPacket.generate({
    cmd: "connect",
    protocolId: "MQTT",
    protocolVersion: 4,
    clientId: "plc-7",
    clean: true,
    keepalive: 60,
    ...options,
  } as IConnectPacket);
}

/** The CONNACK as MQTT.js's own parser reads it, at the given protocol level. */
function parseConnack(bytes: Buffer, protocolVersion: number): IConnackPacket {
  const parser = mqttPacket.parser({ protocolVersion });
  let parsed: IConnackPacket | undefined;
  parser.on("packet", (p) => {
    parsed = p as IConnackPacket;
  });
  parser.on("error", (error) => assert.fail(error));
  parser.parse(bytes);
  assert.ok(parsed, "a whole packet");
  return parsed;
}

function headOf(bytes: Buffer) {
  const read = readConnectHead(bytes, MAX);
  assert.equal(read.status, "complete");
  return read.status === "complete" ? read.head : assert.fail("incomplete");
}

describe("a refused connection's CONNECT, read far enough to answer it", () => {
  it("MQTT 3.1.1 and 3.1: CONNACK return code 3, whatever the code for MQTT 5", () => {
    for (const [protocolId, protocolVersion] of [
      ["MQTT", 4],
      ["MQIsdp", 3],
    ] as const) {
      const head = headOf(
        connect({ protocolId, protocolVersion, username: "u", password: Buffer.from("p") }),
      );
      assert.equal(head.level, protocolVersion);
      const connack = parseConnack(refusalConnack(head, ReasonCode.QuotaExceeded) as Buffer, 4);
      assert.equal(connack.returnCode, 3);
      assert.equal(connack.sessionPresent, false);
    }
  });

  it("MQTT 5: the code with its Reason String", () => {
    const head = headOf(
      connect({
        protocolVersion: 5,
        properties: {
          sessionExpiryInterval: 300,
          receiveMaximum: 10,
          topicAliasMaximum: 4,
          requestResponseInformation: true,
          userProperties: { site: "pump-3" },
          authenticationMethod: "SCRAM-SHA-256",
          authenticationData: Buffer.from("x"),
        },
      }),
    );
    for (const [code, text] of [
      [ReasonCode.QuotaExceeded, "quota exceeded"],
      [ReasonCode.ConnectionRateExceeded, "connection rate exceeded, retry later"],
    ] as const) {
      const connack = parseConnack(refusalConnack(head, code) as Buffer, 5);
      assert.equal(connack.reasonCode, code);
      assert.equal(connack.properties?.reasonString, text);
    }
  });

  it("MQTT 5 with Request Problem Information 0: the code alone", () => {
    const head = headOf(
      connect({ protocolVersion: 5, properties: { requestProblemInformation: false } }),
    );
    const connack = parseConnack(refusalConnack(head, ReasonCode.QuotaExceeded) as Buffer, 5);
    assert.equal(connack.reasonCode, 0x97);
    assert.equal(connack.properties, undefined);
  });

  it("MQTT 5 with a Maximum Packet Size: the string only if it fits, nothing if no CONNACK fits", () => {
    const sized = (maximumPacketSize: number) =>
      headOf(connect({ protocolVersion: 5, properties: { maximumPacketSize } }));
    const bare = refusalConnack(sized(10), ReasonCode.ConnectionRateExceeded) as Buffer;
    assert.equal(bare.length, 5);
    assert.equal(parseConnack(bare, 5).properties, undefined);
    assert.equal(refusalConnack(sized(4), ReasonCode.ConnectionRateExceeded), undefined);
  });

  it("a CONNECT in pieces is incomplete until its last byte, then complete", () => {
    const whole = connect({
      protocolVersion: 5,
      will: { topic: "t", payload: Buffer.from("w"), qos: 0, retain: false },
    });
    for (let cut = 0; cut < whole.length; cut++) {
      assert.equal(
        readConnectHead(whole.subarray(0, cut), MAX).status,
        "incomplete",
        `${cut} bytes`,
      );
    }
    assert.equal(readConnectHead(whole, MAX).status, "complete");
  });

  it("invalid: another packet first, a CONNECT longer than the cap (known from its fixed header), a bad name or level, malformed properties", () => {
    const invalid = (bytes: Buffer, why: string) =>
      assert.equal(readConnectHead(bytes, MAX).status, "invalid", why);
    invalid(mqttPacket.generate({ cmd: "pingreq" }), "PINGREQ");
    const long = connect({ clientId: "x".repeat(MAX) });
    invalid(long.subarray(0, 3), "over the cap, from the fixed header alone");
    invalid(Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff]), "a remaining length of five bytes");
    const level6 = connect({});
    level6[8] = 6;
    invalid(level6, "protocol level 6");
    const named = connect({});
    named[4] = 0x4e; // "NQTT"
    invalid(named, "protocol name");
    const reserved = connect({});
    reserved[9] = (reserved[9] as number) | 0x01;
    invalid(reserved, "reserved flag");
    const v5 = connect({ protocolVersion: 5, properties: { receiveMaximum: 10 } });
    v5[13] = 0x01; // a property identifier CONNECT cannot carry (Payload Format Indicator)
    invalid(v5, "unknown property");
  });
});
