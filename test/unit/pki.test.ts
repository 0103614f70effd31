import assert from "node:assert/strict";
import { createPrivateKey, createPublicKey, generateKeyPairSync, webcrypto } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { buildCrl } from "../../src/pki/build-crl.js";
import type { CertificateAuthority } from "../../src/pki/certificate-authority.js";
import { type CaMaterial, createCa } from "../../src/pki/create-ca.js";
import { DEVICE_ID_PATTERN, validateDeviceId } from "../../src/pki/device-id.js";
import { issueFromCsr, issueWithNewKey } from "../../src/pki/issue-certificate.js";
import { loadCa } from "../../src/pki/load-ca.js";
import { toPem } from "../../src/pki/pem.js";
import { PkiInputError } from "../../src/pki/pki-error.js";
import { parseSerialNumber } from "../../src/pki/serial-number.js";
import { x509 } from "../../src/pki/x509.js";
import { readRevokedSerials } from "../../src/security/crl.js";

const DAY_MS = 24 * 60 * 60 * 1000;
let material: CaMaterial;
let ca: CertificateAuthority;
let dir: string;

before(async () => {
  material = await createCa({ commonName: "Plant 4 Device CA", validityDays: 30 });
  ca = await loadCa(material);
  dir = await mkdtemp(join(tmpdir(), "sluice-pki-unit-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A CSR made with WebCrypto, as a device or a provisioning tool would. */
async function csrFor(
  subject: string,
  keys?: webcrypto.CryptoKeyPair,
  extensions: x509.Extension[] = [],
): Promise<string> {
  const pair =
    keys ??
    (await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ]));
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: subject,
    keys: pair,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    extensions,
  });
  return csr.toString("pem");
}

const refusedWith = (pattern: RegExp) => (error: unknown) =>
  error instanceof PkiInputError && pattern.test(error.message);

describe("createCa", () => {
  it("makes a self-signed P-256 CA allowed to sign certificates and CRLs only", async () => {
    const certificate = new x509.X509Certificate(material.certPem);
    assert.equal(certificate.subject, "CN=Plant 4 Device CA");
    assert.equal(await certificate.isSelfSigned(), true);
    assert.equal(createPublicKey(material.keyPem).asymmetricKeyDetails?.namedCurve, "prime256v1");
    assert.match(material.keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
    const constraints = certificate.getExtension(x509.BasicConstraintsExtension);
    assert.equal(constraints?.ca, true);
    assert.equal(constraints?.critical, true);
    const usage = certificate.getExtension(x509.KeyUsagesExtension);
    assert.equal(usage?.usages, x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
    assert.equal(usage?.critical, true);
    assert.ok(certificate.getExtension(x509.SubjectKeyIdentifierExtension));
    const lifetime = certificate.notAfter.getTime() - certificate.notBefore.getTime();
    assert.ok(Math.abs(lifetime - 30 * DAY_MS) < 10 * 60 * 1000);
  });

  it("makes RSA and P-384 CAs on request", async () => {
    const p384 = await createCa({ commonName: "P384", keyAlgorithm: "P-384" });
    const signed = await issueWithNewKey(await loadCa(p384), { deviceId: "d1" });
    assert.equal(new x509.X509Certificate(signed.certPem).signatureAlgorithm.hash.name, "SHA-384");
    const rsa = await createCa({ commonName: "RSA", keyAlgorithm: "RSA-2048" });
    assert.equal(createPublicKey(rsa.keyPem).asymmetricKeyDetails?.modulusLength, 2048);
  });

  it("refuses an empty name and a lifetime out of bounds", async () => {
    await assert.rejects(createCa({ commonName: " " }), refusedWith(/common name/));
    await assert.rejects(createCa({ commonName: "x", validityDays: 0 }), refusedWith(/between/));
  });
});

describe("loadCa", () => {
  it("refuses a key that does not belong to the certificate", async () => {
    const other = await createCa({ commonName: "Other" });
    await assert.rejects(
      loadCa({ certPem: material.certPem, keyPem: other.keyPem }),
      refusedWith(/does not belong/),
    );
  });

  it("refuses a leaf certificate as a CA", async () => {
    const leaf = await issueWithNewKey(ca, { deviceId: "not-a-ca" });
    await assert.rejects(
      loadCa({ certPem: leaf.certPem, keyPem: leaf.keyPem }),
      refusedWith(/not a CA certificate/),
    );
  });

  it("refuses a CA whose keyUsage does not allow signing certificates", async () => {
    const keys = await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ]);
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      name: "CN=signing-only",
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      ],
    });
    const keyPem = toPem("PRIVATE KEY", await webcrypto.subtle.exportKey("pkcs8", keys.privateKey));
    await assert.rejects(
      loadCa({ certPem: cert.toString("pem"), keyPem }),
      refusedWith(/keyUsage lacks keyCertSign/),
    );
  });

  it("refuses an expired CA and one not yet valid", async () => {
    await assert.rejects(
      loadCa({ ...material, now: new Date(Date.now() + 31 * DAY_MS) }),
      refusedWith(/expired on/),
    );
    await assert.rejects(
      loadCa({ ...material, now: new Date(Date.now() - DAY_MS) }),
      refusedWith(/not valid before/),
    );
  });

  it("reads a SEC1 key (openssl ecparam) as well as PKCS#8", async () => {
    const sec1 = createPrivateKey(material.keyPem)
      .export({ type: "sec1", format: "pem" })
      .toString();
    assert.match(sec1, /BEGIN EC PRIVATE KEY/);
    const loaded = await loadCa({ certPem: material.certPem, keyPem: sec1 });
    assert.equal(loaded.certificate.subject, "CN=Plant 4 Device CA");
  });

  it("refuses garbage with a typed error that quotes nothing of it", async () => {
    await assert.rejects(
      loadCa({ certPem: "hello", keyPem: material.keyPem }),
      refusedWith(/not PEM/),
    );
    const badKey =
      "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n";
    await assert.rejects(loadCa({ certPem: material.certPem, keyPem: badKey }), (error) => {
      assert.ok(error instanceof PkiInputError);
      assert.doesNotMatch(error.message, /c2VjcmV0|secret/);
      return true;
    });
  });
});

describe("issueFromCsr", () => {
  it("certifies the CSR's key for CN = device id as a client certificate", async () => {
    const issued = await issueFromCsr(ca, await csrFor("CN=pump-7"), {
      deviceId: "pump-7",
      validityDays: 7,
    });
    const certificate = new x509.X509Certificate(issued.certPem);
    assert.equal(certificate.subject, "CN=pump-7");
    assert.equal(
      await certificate.verify({ publicKey: ca.certificate.publicKey, signatureOnly: true }),
      true,
    );
    assert.equal(certificate.getExtension(x509.BasicConstraintsExtension)?.ca, false);
    assert.equal(
      certificate.getExtension(x509.KeyUsagesExtension)?.usages,
      x509.KeyUsageFlags.digitalSignature,
    );
    assert.deepEqual(
      [...(certificate.getExtension(x509.ExtendedKeyUsageExtension)?.usages ?? [])],
      [x509.ExtendedKeyUsage.clientAuth],
    );
    assert.equal(
      certificate.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId,
      ca.certificate.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId,
    );
    // Issuer bytes equal the CA's subject bytes: issuer matching never depends on re-encoding.
    assert.deepEqual(
      Buffer.from(certificate.issuerName.toArrayBuffer()),
      Buffer.from(ca.certificate.subjectName.toArrayBuffer()),
    );
    assert.equal(issued.serial, certificate.serialNumber.toUpperCase());
    assert.match(issued.serial, /^[4-7][0-9A-F]{31}$/);
    const skewMs = Date.now() - certificate.notBefore.getTime();
    assert.ok(skewMs > 60_000 && skewMs < 10 * 60_000, "notBefore is a few minutes back");
    assert.ok(Math.abs(certificate.notAfter.getTime() - Date.now() - 7 * DAY_MS) < 5000);
  });

  it("accepts a CSR without a CN and names the device itself", async () => {
    const issued = await issueFromCsr(ca, await csrFor("O=Acme"), { deviceId: "valve-2" });
    assert.equal(new x509.X509Certificate(issued.certPem).subject, "CN=valve-2");
  });

  it("refuses a CSR naming another device", async () => {
    await assert.rejects(
      issueFromCsr(ca, await csrFor("CN=pump-8"), { deviceId: "pump-7" }),
      refusedWith(/asks for CN "pump-8" but the device id is "pump-7"/),
    );
  });

  it("ignores requested extensions: a CSR asking to be a CA gets a leaf", async () => {
    const csr = await csrFor("CN=sneaky", undefined, [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
      new x509.SubjectAlternativeNameExtension([{ type: "dns", value: "broker.example" }]),
    ]);
    const issued = await issueFromCsr(ca, csr, { deviceId: "sneaky" });
    const certificate = new x509.X509Certificate(issued.certPem);
    assert.equal(certificate.getExtension(x509.BasicConstraintsExtension)?.ca, false);
    assert.equal(certificate.getExtension(x509.SubjectAlternativeNameExtension), null);
  });

  it("refuses a CSR whose signature does not match its key", async () => {
    const pem = await csrFor("CN=tampered");
    const der = Buffer.from(pem.replace(/-----[A-Z ]+-----|\s/g, ""), "base64");
    der[der.length - 5] = (der[der.length - 5] ?? 0) ^ 0xff;
    await assert.rejects(
      issueFromCsr(ca, toPem("CERTIFICATE REQUEST", der), { deviceId: "tampered" }),
      (error) => error instanceof PkiInputError,
    );
  });

  it("refuses Ed25519 and short RSA keys, accepts RSA 2048 with keyEncipherment", async () => {
    const ed = await webcrypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
    const edCsr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: "CN=ed",
      keys: ed as webcrypto.CryptoKeyPair,
      signingAlgorithm: { name: "Ed25519" },
    });
    await assert.rejects(
      issueFromCsr(ca, edCsr.toString("pem"), { deviceId: "ed" }),
      refusedWith(/ed25519 keys are not accepted/),
    );
    const rsaParams = {
      name: "RSASSA-PKCS1-v1_5",
      hash: "SHA-256",
      publicExponent: new Uint8Array([1, 0, 1]),
    };
    const short = await webcrypto.subtle.generateKey({ ...rsaParams, modulusLength: 1024 }, true, [
      "sign",
      "verify",
    ]);
    const shortCsr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: "CN=short",
      keys: short,
      signingAlgorithm: rsaParams,
    });
    await assert.rejects(
      issueFromCsr(ca, shortCsr.toString("pem"), { deviceId: "short" }),
      refusedWith(/RSA key of 1024 bits/),
    );
    const rsa = await webcrypto.subtle.generateKey({ ...rsaParams, modulusLength: 2048 }, true, [
      "sign",
      "verify",
    ]);
    const rsaCsr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: "CN=rsa",
      keys: rsa,
      signingAlgorithm: rsaParams,
    });
    const issued = await issueFromCsr(ca, rsaCsr.toString("pem"), { deviceId: "rsa" });
    assert.equal(
      new x509.X509Certificate(issued.certPem).getExtension(x509.KeyUsagesExtension)?.usages,
      x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
    );
  });

  it("refuses malformed, oversized and multi-block input with typed errors", async () => {
    const csr = await csrFor("CN=a");
    for (const [input, pattern] of [
      ["not pem at all", /not PEM/],
      [
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        /not a valid PKCS#10/,
      ],
      [material.certPem, /"CERTIFICATE" PEM block/],
      [csr + csr, /exactly one PEM block/],
      [`${csr}\n${" ".repeat(20_000)}`, /larger than/],
    ] as const) {
      await assert.rejects(issueFromCsr(ca, input, { deviceId: "a" }), refusedWith(pattern));
    }
  });

  it("checks the device id and the lifetime before anything else", async () => {
    const csr = await csrFor("CN=x");
    await assert.rejects(
      issueFromCsr(ca, csr, { deviceId: "a/b" }),
      refusedWith(/may only contain/),
    );
    await assert.rejects(
      issueFromCsr(ca, csr, { deviceId: "x", validityDays: 826 }),
      refusedWith(/between 1 hours and 825 days/),
    );
    await assert.rejects(
      issueFromCsr(ca, csr, { deviceId: "x", validityDays: 1 / 48 }),
      refusedWith(/between/),
    );
  });

  it("never lets a certificate outlive its CA", async () => {
    const issued = await issueWithNewKey(ca, { deviceId: "long", validityDays: 800 });
    assert.equal(issued.notAfter.getTime(), ca.certificate.notAfter.getTime());
  });
});

describe("issueWithNewKey", () => {
  it("returns a PKCS#8 key matching the certificate", async () => {
    const issued = await issueWithNewKey(ca, { deviceId: "rtu:12.a_b" });
    const spkiOfKey = createPublicKey(issued.keyPem).export({ type: "spki", format: "der" });
    const certificate = new x509.X509Certificate(issued.certPem);
    assert.deepEqual(spkiOfKey, Buffer.from(certificate.publicKey.rawData));
    assert.equal(certificate.subject, "CN=rtu:12.a_b");
  });
});

describe("device ids", () => {
  it("accepts client-id-safe names and refuses the rest", () => {
    for (const ok of ["a", "PLC-7", "site1:line2.rtu_3", "x".repeat(128)]) {
      assert.equal(validateDeviceId(ok), ok);
      assert.match(ok, DEVICE_ID_PATTERN);
    }
    for (const bad of ["", "x".repeat(129), "a b", "a/b", "a+b", "a#", "CN=x,O=y", "..", "é", 7]) {
      assert.throws(() => validateDeviceId(bad), PkiInputError);
    }
  });
});

describe("buildCrl", () => {
  it("lists the serials so that readRevokedSerials reads them back normalized", async () => {
    const issued = await issueWithNewKey(ca, { deviceId: "stolen" });
    const crlPem = await buildCrl(
      ca,
      [
        { serial: issued.serial, revokedAt: new Date() },
        { serial: "00:ff:01", revokedAt: new Date() },
        { serial: "0x0A", revokedAt: new Date() },
      ],
      { nextUpdateHours: 2, crlNumber: 42n },
    );
    const path = join(dir, "ca.crl");
    await writeFile(path, crlPem);
    assert.deepEqual(await readRevokedSerials(path), new Set([issued.serial, "FF01", "A"]));
    const crl = new x509.X509Crl(crlPem);
    assert.equal(await crl.verify({ publicKey: ca.certificate }), true);
    assert.equal(crl.issuer, ca.certificate.subject);
    assert.ok(crl.getExtension("2.5.29.20"), "has a CRL number");
    assert.ok(crl.getExtension(x509.AuthorityKeyIdentifierExtension), "names the CA's key");
    assert.ok(Math.abs((crl.nextUpdate?.getTime() ?? 0) - Date.now() - 2 * 3600_000) < 5000);
  });

  it("refuses bad serials and dates", async () => {
    await assert.rejects(
      buildCrl(ca, [{ serial: "xyz", revokedAt: new Date() }]),
      refusedWith(/not a hex serial/),
    );
    await assert.rejects(
      buildCrl(ca, [{ serial: "01", revokedAt: new Date(Number.NaN) }]),
      refusedWith(/not a valid date/),
    );
  });
});

describe("serial numbers", () => {
  it("parse to the form Node's TLS reports", () => {
    assert.equal(parseSerialNumber("00:4f:2a"), "4F2A");
    assert.equal(parseSerialNumber("0x4f2a"), "4F2A");
    assert.throws(() => parseSerialNumber("00"), PkiInputError);
    assert.throws(() => parseSerialNumber("f".repeat(42)), PkiInputError);
  });
});

describe("loadCa with a PKCS#1 RSA key", () => {
  it("reads it, and refuses it when it is not the certificate's key", async () => {
    const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    await assert.rejects(
      loadCa({
        certPem: material.certPem,
        keyPem: privateKey.export({ type: "pkcs1", format: "pem" }),
      }),
      refusedWith(/does not belong/),
    );
  });
});
