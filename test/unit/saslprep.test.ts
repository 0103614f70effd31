import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  normalizedPasswordBytes,
  SaslprepError,
  saslprepName,
  saslprepPassword,
} from "../../src/security/saslprep.js";

describe("SASLprep (RFC 4013)", () => {
  it("maps and normalizes as RFC 4013 §3's examples say", () => {
    assert.equal(saslprepPassword("I\u00ADX"), "IX"); // soft hyphen mapped to nothing
    assert.equal(saslprepPassword("user"), "user");
    assert.equal(saslprepPassword("USER"), "USER");
    assert.equal(saslprepPassword("\u00AA"), "a"); // NFKC
    assert.equal(saslprepPassword("\u2168"), "IX"); // NFKC
    assert.equal(saslprepPassword("a\u00A0b"), "a b"); // non-ASCII space
  });

  it("refuses prohibited characters and mixed direction, saying which", () => {
    assert.throws(() => saslprepPassword("\u0007"), {
      name: "SaslprepError",
      message: /password contains U\+0007/,
    });
    assert.throws(() => saslprepPassword("\u0627\u0031"), SaslprepError); // RFC 4013 §3 example 7
    assert.throws(() => saslprepPassword("a\u0627"), /right-to-left and left-to-right/);
    assert.throws(() => saslprepName("\u00AD"), /empty after SASLprep/);
  });

  it("allows unassigned code points in names (queries), not in passwords (stored strings)", () => {
    // U+0221 was unassigned in Unicode 3.2, which stringprep's tables are of.
    assert.equal(saslprepName("a\u0221"), "a\u0221");
    assert.throws(() => saslprepPassword("a\u0221"), /U\+0221/);
  });

  it("gives a password's bytes as a SCRAM client salts them", () => {
    assert.deepEqual(normalizedPasswordBytes(Buffer.from("I\u00ADX")), Buffer.from("IX"));
    const notUtf8 = Buffer.from([0x70, 0xff, 0x71]);
    assert.equal(normalizedPasswordBytes(notUtf8), notUtf8);
    const prohibited = Buffer.from("a\u0007");
    assert.equal(normalizedPasswordBytes(prohibited), prohibited);
  });
});
