import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { normalizeAddress, TrustedProxies } from "../../src/transport/trusted-proxies.js";

describe("client addresses", () => {
  it("normalises IPv4-mapped IPv6 to IPv4 and IPv6 to its compressed lower-case form", () => {
    assert.equal(normalizeAddress("::ffff:198.51.100.7"), "198.51.100.7");
    assert.equal(normalizeAddress("::FFFF:c633:6407"), "198.51.100.7");
    assert.equal(normalizeAddress("0:0:0:0:0:ffff:198.51.100.7"), "198.51.100.7");
    assert.equal(normalizeAddress("2001:DB8:0:0:0:0:0:7"), "2001:db8::7");
    assert.equal(normalizeAddress("198.51.100.7"), "198.51.100.7");
    assert.equal(normalizeAddress("::1"), "::1");
    assert.equal(normalizeAddress(""), "");
  });

  it("trusts addresses inside the configured CIDRs, IPv4 and IPv6", () => {
    const trusted = new TrustedProxies(["10.0.0.0/8", "127.0.0.1", "fd00::/8"]);
    assert.equal(trusted.has("10.200.1.2"), true);
    assert.equal(trusted.has("127.0.0.1"), true);
    assert.equal(trusted.has("127.0.0.2"), false);
    assert.equal(trusted.has("fd12::1"), true);
    assert.equal(trusted.has("2001:db8::1"), false);
    assert.equal(trusted.has("not an address"), false);
  });
});

describe("X-Forwarded-For", () => {
  const trusted = new TrustedProxies(["127.0.0.1/32", "10.0.0.0/8"]);

  it("takes the right-most address that is not a trusted proxy", () => {
    const header = "192.0.2.1, 203.0.113.9, 10.1.2.3";
    assert.equal(trusted.forwardedClient("127.0.0.1", header), "203.0.113.9");
    assert.equal(trusted.forwardedClient("127.0.0.1", "203.0.113.9"), "203.0.113.9");
  });

  it("joins repeated headers and strips ports and brackets", () => {
    assert.equal(
      trusted.forwardedClient("127.0.0.1", ["192.0.2.1", "[2001:db8::9]:443, 10.0.0.1:80"]),
      "2001:db8::9",
    );
    assert.equal(trusted.forwardedClient("127.0.0.1", "203.0.113.9:5555"), "203.0.113.9");
    assert.equal(trusted.forwardedClient("127.0.0.1", "::ffff:203.0.113.9"), "203.0.113.9");
  });

  it("takes the left-most when every hop is trusted", () => {
    assert.equal(trusted.forwardedClient("127.0.0.1", "10.0.0.5, 10.0.0.6"), "10.0.0.5");
  });

  it("is ignored from an untrusted peer, when absent or empty, or when the client hop is not an address", () => {
    assert.equal(trusted.forwardedClient("127.0.0.2", "203.0.113.9"), undefined);
    assert.equal(trusted.forwardedClient("127.0.0.1", undefined), undefined);
    assert.equal(trusted.forwardedClient("127.0.0.1", " , "), undefined);
    assert.equal(trusted.forwardedClient("127.0.0.1", "203.0.113.9, unknown, 10.0.0.1"), undefined);
    // What lies left of the client was written by the client: garbage there does not matter.
    assert.equal(trusted.forwardedClient("127.0.0.1", "unknown, 203.0.113.9"), "203.0.113.9");
  });
});
