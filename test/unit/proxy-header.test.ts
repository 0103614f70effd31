import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { proxyV1, proxyV2, rawV2, V2_SIGNATURE } from "../../harness/proxy-protocol.js";
import { parseProxyHeader, V1_MAX_BYTES, V2_MAX_BYTES } from "../../src/transport/proxy-header.js";

const MQTT_CONNECT_START = Buffer.from([0x10, 0x0c, 0x00, 0x04]);

describe("PROXY header - version 1", () => {
  it("decodes TCP4 and says where the header ends", () => {
    const header = proxyV1("198.51.100.7", 51234);
    assert.deepEqual(parseProxyHeader(Buffer.concat([header, MQTT_CONNECT_START])), {
      status: "complete",
      version: 1,
      length: header.length,
      source: { address: "198.51.100.7", port: 51234 },
    });
  });

  it("decodes TCP6, normalised", () => {
    const parsed = parseProxyHeader(proxyV1("2001:DB8:0:0:0:0:0:7", 443));
    assert.equal(parsed.status, "complete");
    assert.deepEqual(parsed.status === "complete" && parsed.source, {
      address: "2001:db8::7",
      port: 443,
    });
  });

  it("decodes the longest header the spec allows", () => {
    const full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    const header = proxyV1(full, 65535, full, 65535);
    assert.equal(header.length, V1_MAX_BYTES - 3); // "TCP6" leaves 3 bytes of the budget
    assert.equal(parseProxyHeader(header).status, "complete");
  });

  it("UNKNOWN, short or with addresses, keeps the socket's address", () => {
    for (const line of ["PROXY UNKNOWN\r\n", "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"]) {
      assert.deepEqual(parseProxyHeader(Buffer.from(line)), {
        status: "complete",
        version: 1,
        length: line.length,
      });
    }
  });

  it("waits for more bytes while the line could still complete", () => {
    const header = proxyV1("198.51.100.7");
    for (let n = 0; n < header.length; n++) {
      assert.deepEqual(parseProxyHeader(header.subarray(0, n)), { status: "incomplete" }, `${n}`);
    }
  });

  it("refuses a line without CRLF within 107 bytes", () => {
    const long = Buffer.from(`PROXY TCP4 ${"1".repeat(200)}`);
    assert.equal(parseProxyHeader(long.subarray(0, V1_MAX_BYTES - 1)).status, "incomplete");
    assert.equal(parseProxyHeader(long.subarray(0, V1_MAX_BYTES)).status, "invalid");
    assert.equal(parseProxyHeader(long).status, "invalid");
    const line = (length: number) =>
      Buffer.from(`PROXY UNKNOWN ${"x".repeat(length - 16)}\r\n`, "latin1");
    assert.equal(line(V1_MAX_BYTES).length, V1_MAX_BYTES);
    assert.equal(parseProxyHeader(line(V1_MAX_BYTES)).status, "complete");
    assert.equal(parseProxyHeader(line(V1_MAX_BYTES + 1)).status, "invalid");
  });

  it("refuses malformed lines", () => {
    for (const line of [
      "PROXY TCP4 198.51.100.7 127.0.0.1 40000\r\n", // a port missing
      "PROXY TCP4  198.51.100.7 127.0.0.1 40000 1883\r\n", // two spaces
      "PROXY TCP4 198.51.100.7 127.0.0.1 40000 1883 \r\n", // trailing space
      "PROXY TCP5 198.51.100.7 127.0.0.1 40000 1883\r\n", // no such family
      "PROXY TCP4 2001:db8::7 ::1 40000 1883\r\n", // IPv6 addresses as TCP4
      "PROXY TCP6 198.51.100.7 127.0.0.1 40000 1883\r\n", // IPv4 addresses as TCP6
      "PROXY TCP4 198.51.100.256 127.0.0.1 40000 1883\r\n", // not an address
      "PROXY TCP4 198.51.100.7 127.0.0.1 65536 1883\r\n", // port out of range
      "PROXY TCP4 198.51.100.7 127.0.0.1 40000 1883\n", // LF without CR
      "PROXY TCP4 198.51.100.7 127.0.0.1 -1 1883\r\n",
      "PROXY \r\n",
    ]) {
      assert.equal(parseProxyHeader(Buffer.from(line)).status, "invalid", JSON.stringify(line));
    }
  });
});

describe("PROXY header - version 2", () => {
  it("decodes TCP over IPv4 and says where the header ends", () => {
    const header = proxyV2({ source: "198.51.100.7", sourcePort: 51234 });
    assert.equal(header.length, 28);
    assert.deepEqual(parseProxyHeader(Buffer.concat([header, MQTT_CONNECT_START])), {
      status: "complete",
      version: 2,
      length: 28,
      source: { address: "198.51.100.7", port: 51234 },
    });
  });

  it("decodes TCP over IPv6, compressed, and an IPv4-mapped source as IPv4", () => {
    const v6 = parseProxyHeader(proxyV2({ source: "2001:db8:0:0:0:0:0:7", sourcePort: 1 }));
    assert.deepEqual(v6.status === "complete" && v6.source, { address: "2001:db8::7", port: 1 });
    const mapped = parseProxyHeader(proxyV2({ source: "::ffff:c633:6407", sourcePort: 2 }));
    assert.deepEqual(mapped.status === "complete" && mapped.source, {
      address: "198.51.100.7",
      port: 2,
    });
  });

  it("skips TLVs after the addresses", () => {
    // PP2_TYPE_AUTHORITY "broker.example", then PP2_TYPE_NOOP with 3 bytes.
    const tlvs = Buffer.concat([
      Buffer.from([0x02, 0x00, 14]),
      Buffer.from("broker.example"),
      Buffer.from([0x04, 0x00, 3, 0, 0, 0]),
    ]);
    const header = proxyV2({ source: "198.51.100.7", tlvs });
    const parsed = parseProxyHeader(Buffer.concat([header, MQTT_CONNECT_START]));
    assert.equal(parsed.status, "complete");
    assert.equal(parsed.status === "complete" && parsed.length, header.length);
  });

  it("LOCAL (a health check) keeps the socket's address", () => {
    const header = proxyV2({ local: true });
    assert.deepEqual(parseProxyHeader(header), {
      status: "complete",
      version: 2,
      length: header.length,
    });
    const bare = rawV2(0x20, 0x00, Buffer.alloc(0));
    assert.deepEqual(parseProxyHeader(bare), { status: "complete", version: 2, length: 16 });
  });

  it("PROXY for UNSPEC, UNIX or UDP keeps the socket's address", () => {
    for (const [familyTransport, body] of [
      [0x00, Buffer.alloc(0)],
      [0x31, Buffer.alloc(216)],
      [0x12, Buffer.alloc(12)],
    ] as const) {
      const parsed = parseProxyHeader(rawV2(0x21, familyTransport, body));
      assert.deepEqual(parsed, { status: "complete", version: 2, length: 16 + body.length });
    }
  });

  it("waits for more bytes until the announced length has arrived", () => {
    const header = proxyV2({ source: "2001:db8::7" });
    for (let n = 0; n < header.length; n++) {
      assert.deepEqual(parseProxyHeader(header.subarray(0, n)), { status: "incomplete" }, `${n}`);
    }
    assert.equal(parseProxyHeader(header).status, "complete");
  });

  it("refuses a wrong version, command, family or transport", () => {
    const addresses = Buffer.alloc(12);
    for (const [versionCommand, familyTransport] of [
      [0x11, 0x11], // version 1 in binary form
      [0x31, 0x11], // version 3
      [0x22, 0x11], // command 2
      [0x21, 0x41], // family 4
      [0x21, 0x13], // transport 3
    ]) {
      const header = rawV2(versionCommand as number, familyTransport as number, addresses);
      assert.equal(
        parseProxyHeader(header).status,
        "invalid",
        `${versionCommand}/${familyTransport}`,
      );
    }
  });

  it("refuses a length too short for the address family", () => {
    assert.equal(parseProxyHeader(rawV2(0x21, 0x11, Buffer.alloc(11))).status, "invalid");
    assert.equal(parseProxyHeader(rawV2(0x21, 0x21, Buffer.alloc(35))).status, "invalid");
  });

  it("refuses an oversized header as soon as its length is known", () => {
    const fixed = Buffer.from([0x21, 0x11, 0xff, 0xff]);
    assert.equal(parseProxyHeader(Buffer.concat([V2_SIGNATURE, fixed])).status, "invalid");
    const justFits = rawV2(0x21, 0x11, Buffer.alloc(V2_MAX_BYTES - 16));
    assert.equal(parseProxyHeader(justFits).status, "complete");
    const tooLong = rawV2(0x21, 0x11, Buffer.alloc(V2_MAX_BYTES - 15));
    assert.equal(parseProxyHeader(tooLong.subarray(0, 16)).status, "invalid");
  });
});

describe("PROXY header - neither version", () => {
  it("an empty buffer is incomplete; anything else without a signature is refused", () => {
    assert.deepEqual(parseProxyHeader(Buffer.alloc(0)), { status: "incomplete" });
    for (const bytes of [
      MQTT_CONNECT_START,
      Buffer.from("GET / HTTP/1.1\r\n"),
      Buffer.from("proxy TCP4 198.51.100.7 127.0.0.1 1 2\r\n"),
      Buffer.from([0x16, 0x03, 0x01]), // a TLS ClientHello
      Buffer.concat([V2_SIGNATURE.subarray(0, 11), Buffer.from([0x00])]),
      Buffer.from("PROXX"),
    ]) {
      assert.equal(parseProxyHeader(bytes).status, "invalid", bytes.toString("hex"));
    }
  });

  it("refuses random bytes without ever throwing", () => {
    let seed = 42;
    const random = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed & 0xff;
    };
    for (let i = 0; i < 2000; i++) {
      const prefix =
        i % 3 === 0 ? V2_SIGNATURE : i % 3 === 1 ? Buffer.from("PROXY ") : Buffer.alloc(0);
      const noise = Buffer.from(Array.from({ length: (i % 120) + 1 }, random));
      const parsed = parseProxyHeader(Buffer.concat([prefix, noise]));
      assert.ok(["incomplete", "invalid", "complete"].includes(parsed.status));
    }
  });
});
