import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ScramClient } from "../../harness/scram-client.js";
import {
  deriveScramCredential,
  encodeScramCredential,
  parseScramCredential,
  type ScramCredential,
  ScramExchange,
  scramCredentialOf,
  scramPasswordMatches,
} from "../../src/security/scram.js";

// RFC 7677 §3: user "user", password "pencil".
const RFC = {
  salt: Buffer.from("W22ZaJ0SNY7soEsUEjb6gQ==", "base64"),
  clientFirst: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
  serverNonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
  serverFirst:
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
  clientFinal:
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
  serverFinal: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
};

async function rfcCredential(): Promise<ScramCredential> {
  return deriveScramCredential(Buffer.from("pencil"), RFC.salt, 4096);
}

function exchange(credential: ScramCredential | undefined, known = "user"): ScramExchange {
  return new ScramExchange(
    async (name) => (name === known ? credential : undefined),
    async () => Buffer.from("decoy secret"),
    () => RFC.serverNonce,
  );
}

describe("SCRAM-SHA-256 (RFC 7677's test vector)", () => {
  it("answers the RFC's client with the RFC's server messages", async () => {
    const scram = exchange(await rfcCredential());
    const first = await scram.step(Buffer.from(RFC.clientFirst));
    assert.deepEqual(first, { kind: "continue", data: Buffer.from(RFC.serverFirst) });
    assert.equal(scram.username, "user");
    const final = await scram.step(Buffer.from(RFC.clientFinal));
    assert.deepEqual(final, {
      kind: "verified",
      username: "user",
      data: Buffer.from(RFC.serverFinal),
    });
  });

  it("refuses a wrong proof, a changed nonce and a replayed exchange", async () => {
    const wrongProof = exchange(await deriveScramCredential(Buffer.from("pen"), RFC.salt, 4096));
    await wrongProof.step(Buffer.from(RFC.clientFirst));
    const refused = await wrongProof.step(Buffer.from(RFC.clientFinal));
    assert.equal(refused.kind === "refused" && refused.reason, "bad_password");

    const changedNonce = exchange(await rfcCredential());
    await changedNonce.step(Buffer.from(RFC.clientFirst));
    const nonce = await changedNonce.step(Buffer.from(RFC.clientFinal.replace("k0,p=", "k1,p=")));
    assert.equal(nonce.kind === "refused" && nonce.reason, "malformed");

    const done = exchange(await rfcCredential());
    await done.step(Buffer.from(RFC.clientFirst));
    await done.step(Buffer.from(RFC.clientFinal));
    const again = await done.step(Buffer.from(RFC.clientFinal));
    assert.equal(again.kind, "refused");
  });

  it("gives an unknown user a stable made-up salt and fails it at the proof", async () => {
    const first = await exchange(undefined).step(Buffer.from(RFC.clientFirst));
    const second = await exchange(undefined).step(Buffer.from(RFC.clientFirst));
    assert.equal(first.kind, "continue");
    assert.deepEqual(first, second, "the same answer each time, as for a real user");
    assert.doesNotMatch(String(first.kind === "continue" && first.data), /W22ZaJ0SNY7soEsUEjb6gQ/);
    const scram = exchange(undefined);
    await scram.step(Buffer.from(RFC.clientFirst));
    const final = await scram.step(Buffer.from(RFC.clientFinal));
    assert.equal(final.kind === "refused" && final.reason, "unknown_user");
  });

  it("refuses malformed client-first messages", async () => {
    const credential = await rfcCredential();
    for (const message of [
      "p=tls-unique,,n=user,r=abc", // channel binding asked for
      "n,a=admin,n=user,r=abc", // authzid
      "n,,r=abc", // no name
      "n,,n=user", // no nonce
      "n,,n=us=er,r=abc", // bad escape
      "n,,n=user,n=other,r=abc", // repeated attribute
      "n,,m=ext,n=user,r=abc", // mandatory extension
      `n,,n=user,r=${"a".repeat(2000)}`, // oversized
    ]) {
      const step = await exchange(credential).step(Buffer.from(message));
      assert.equal(step.kind === "refused" && step.reason, "malformed", message);
    }
    assert.equal((await exchange(credential).step(undefined)).kind, "refused");
  });

  it("decodes escaped names, and checks c= against the client's own GS2 header", async () => {
    const credential = await rfcCredential();
    const scram = exchange(credential, "a,b=c");
    const first = await scram.step(Buffer.from("y,,n=a=2Cb=3Dc,r=abc"));
    assert.equal(first.kind, "continue");
    assert.equal(scram.username, "a,b=c");
    const nonce = String(first.kind === "continue" && first.data)
      .split(",")[0]
      ?.slice(2);
    // "biws" is "n,,": this client sent "y,,".
    const final = await scram.step(Buffer.from(`c=biws,r=${nonce},p=AAAA`));
    assert.equal(final.kind === "refused" && final.reason, "malformed");
  });
});

describe("SCRAM-SHA-256 verifiers (PostgreSQL's format)", () => {
  it("round-trips, and verifies plain passwords", async () => {
    const credential = await rfcCredential();
    const encoded = encodeScramCredential(credential);
    assert.match(encoded, /^SCRAM-SHA-256\$4096:W22ZaJ0SNY7soEsUEjb6gQ==\$/);
    assert.deepEqual(parseScramCredential(encoded), credential);
    assert.equal(await scramPasswordMatches(Buffer.from("pencil"), credential), true);
    assert.equal(await scramPasswordMatches(Buffer.from("pencil "), credential), false);
  });

  it("refuses malformed verifiers and excessive iterations", () => {
    for (const bad of [
      "SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB", // short keys
      "SCRAM-SHA-256$0:c2FsdA==$AAAA:BBBB",
      "SCRAM-SHA-256$4096$AAAA:BBBB",
      "scram-sha-256$4096:c2FsdA==$AAAA:BBBB",
    ]) {
      assert.equal(typeof parseScramCredential(bad), "string", bad);
    }
    const key = Buffer.alloc(32).toString("base64");
    assert.match(
      String(parseScramCredential(`SCRAM-SHA-256$99999999:c2FsdA==$${key}:${key}`)),
      /too high/,
    );
  });
});

describe("SCRAM-SHA-256 and SASLprep (RFC 5802 §2.2, RFC 4013)", () => {
  it("a verifier is made from the SASLprepped password: soft hyphen dropped, NFKC applied", async () => {
    const prepared = await deriveScramCredential(Buffer.from("IX"), RFC.salt, 4096);
    for (const password of ["I\u00ADX", "\u2168", "IX"]) {
      const made = await scramCredentialOf(password);
      // Same password, other salt: compare through a plain check against the prepared one.
      assert.equal(await scramPasswordMatches(Buffer.from(password), prepared), true, password);
      assert.equal(await scramPasswordMatches(Buffer.from("IX"), made), true, password);
    }
    assert.equal(await scramPasswordMatches(Buffer.from("I-X"), prepared), false);
  });

  it("refuses to make a verifier of a password SASLprep prohibits, naming the character", async () => {
    await assert.rejects(scramCredentialOf("pen\u0007cil"), {
      name: "SaslprepError",
      message: /U\+0007/,
    });
    await assert.rejects(scramCredentialOf(Buffer.from([0x70, 0xff])), {
      name: "SaslprepError",
      message: /not UTF-8/,
    });
  });

  it("checks a plain password SASLprep refuses as its raw bytes, as PostgreSQL does", async () => {
    const raw = Buffer.from("pen\u0007cil");
    const credential = await deriveScramCredential(raw, RFC.salt, 4096);
    assert.equal(await scramPasswordMatches(raw, credential), true);
  });

  it("looks the user up by the SASLprepped name, and refuses a name SASLprep refuses", async () => {
    const credential = await rfcCredential();
    const asked: string[] = [];
    const scram = new ScramExchange(
      async (name) => {
        asked.push(name);
        return name === "user" ? credential : undefined;
      },
      async () => Buffer.from("decoy secret"),
      () => RFC.serverNonce,
    );
    // "u\u00ADser" is "user" once the soft hyphen is mapped to nothing.
    const client = new ScramClient("u\u00ADser", "pencil");
    const first = await scram.step(client.clientFirst);
    assert.equal(first.kind, "continue");
    assert.deepEqual(asked, ["user"]);
    assert.equal(scram.username, "user");
    const final = await scram.step(
      client.final(first.kind === "continue" ? first.data : Buffer.alloc(0)),
    );
    assert.equal(final.kind === "verified" && final.username, "user");

    for (const name of ["us\u0007er", "\u00AD"]) {
      const step = await exchange(credential).step(Buffer.from(`n,,n=${name},r=abc`));
      assert.equal(step.kind === "refused" && step.reason, "malformed", JSON.stringify(name));
    }
  });
});
