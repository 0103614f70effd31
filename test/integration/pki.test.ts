import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createServer, type TLSSocket, connect as tlsConnect } from "node:tls";
import { promisify } from "node:util";
import { createTestPki, opensslKeyAndCsr, type TestPki } from "../../harness/certs.js";
import { startNode } from "../../harness/in-process-node.js";
import { connect, end } from "../../harness/mqtt-client.js";
import { buildCrl } from "../../src/pki/build-crl.js";
import { caInit, caIssue, caRevoke, runCaCommand } from "../../src/pki/ca-command.js";
import type { CertificateAuthority } from "../../src/pki/certificate-authority.js";
import { createCa } from "../../src/pki/create-ca.js";
import { issueFromCsr, issueWithNewKey } from "../../src/pki/issue-certificate.js";
import { loadCa, loadCaFiles } from "../../src/pki/load-ca.js";
import { PkiInputError } from "../../src/pki/pki-error.js";
import { readRevokedSerials } from "../../src/security/crl.js";

const run = promisify(execFile);
let dir: string;
let ca: CertificateAuthority;
let caCertFile: string;
/** Server side of the TLS tests: the server certificate comes from the helpers' test PKI. */
let serverPki: TestPki;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-pki-"));
  const material = await createCa({ commonName: "Sluice Test Device CA", validityDays: 2 });
  ca = await loadCa(material);
  caCertFile = join(dir, "ca.crt");
  await writeFile(caCertFile, material.certPem);
  serverPki = await createTestPki();
});
after(async () => {
  await serverPki.cleanup();
  await rm(dir, { recursive: true, force: true });
});

async function save(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

async function opensslCsr(name: string, subject: string, algorithm: "EC" | "RSA"): Promise<string> {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const keyOptions =
    algorithm === "EC"
      ? ["-pkeyopt", "ec_paramgen_curve:P-256"]
      : ["-pkeyopt", "rsa_keygen_bits:2048"];
  await run("openssl", ["genpkey", "-algorithm", algorithm, ...keyOptions, "-out", key]);
  await run("openssl", ["req", "-new", "-key", key, "-subj", subject, "-out", csr]);
  return readFile(csr, "utf8");
}

describe("PKI cross-checked with OpenSSL", () => {
  it("openssl verify accepts a certificate issued to an openssl EC CSR", async () => {
    const issued = await issueFromCsr(ca, await opensslCsr("ec-dev", "/CN=ec-dev", "EC"), {
      deviceId: "ec-dev",
    });
    const cert = await save("ec-dev.crt", issued.certPem);
    const { stdout } = await run("openssl", [
      "verify",
      "-purpose",
      "sslclient",
      "-CAfile",
      caCertFile,
      cert,
    ]);
    assert.match(stdout, /: OK/);
  });

  it("openssl verify accepts a certificate issued to an openssl RSA CSR", async () => {
    const issued = await issueFromCsr(
      ca,
      await opensslCsr("rsa-dev", "/O=Acme/CN=rsa-dev", "RSA"),
      {
        deviceId: "rsa-dev",
      },
    );
    const cert = await save("rsa-dev.crt", issued.certPem);
    const { stdout } = await run("openssl", [
      "x509",
      "-in",
      cert,
      "-noout",
      "-subject",
      "-ext",
      "keyUsage",
    ]);
    assert.match(stdout, /subject=CN ?= ?rsa-dev/);
    assert.match(stdout, /Digital Signature, Key Encipherment/);
    await run("openssl", ["verify", "-CAfile", caCertFile, cert]);
  });

  it("an openssl CSR for another CN is refused", async () => {
    await assert.rejects(
      issueFromCsr(ca, await opensslCsr("thief", "/CN=pump-1", "EC"), { deviceId: "pump-2" }),
      (error) => error instanceof PkiInputError && /pump-1/.test(error.message),
    );
  });

  it("openssl parses the CRL and refuses the revoked certificate with it", async () => {
    const revoked = await issueWithNewKey(ca, { deviceId: "gone" });
    const kept = await issueWithNewKey(ca, { deviceId: "kept" });
    const crl = await save(
      "ossl.crl",
      await buildCrl(ca, [{ serial: revoked.serial, revokedAt: new Date() }]),
    );
    const { stdout } = await run("openssl", ["crl", "-in", crl, "-noout", "-text"]);
    assert.match(stdout, /X509v3 CRL Number/);
    assert.match(stdout, /X509v3 Authority Key Identifier/);
    assert.match(stdout, new RegExp(`Serial Number: ${revoked.serial}`));
    const check = ["verify", "-crl_check", "-CRLfile", crl, "-CAfile", caCertFile];
    await run("openssl", [...check, await save("kept.crt", kept.certPem)]);
    await assert.rejects(
      run("openssl", [...check, await save("gone.crt", revoked.certPem)]),
      /revoked/,
    );
  });

  it("an operator's intermediate made with openssl signs device certificates and CRLs", async () => {
    const root = join(dir, "root");
    const inter = join(dir, "inter");
    const ext = await save(
      "inter.ext",
      "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    );
    await run("openssl", [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-384",
      "-nodes",
      "-keyout",
      `${root}.key`,
      "-subj",
      "/CN=Operator Root",
      "-days",
      "2",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
      "-out",
      `${root}.crt`,
    ]);
    await opensslKeyAndCsr(inter, "/O=Operator/CN=Site Intermediate");
    await run("openssl", [
      "x509",
      "-req",
      "-in",
      `${inter}.csr`,
      "-CA",
      `${root}.crt`,
      "-CAkey",
      `${root}.key`,
      "-set_serial",
      "77",
      "-days",
      "2",
      "-extfile",
      ext,
      "-out",
      `${inter}.crt`,
    ]);

    const intermediate = await loadCaFiles({
      certFile: `${inter}.crt`,
      keyFile: `${inter}.key`,
      chainFile: `${inter}.crt`,
    });
    const issued = await issueWithNewKey(intermediate, { deviceId: "site-dev" });
    assert.equal(issued.certPem.match(/BEGIN CERTIFICATE/g)?.length, 2, "leaf plus intermediate");
    const leaf = await save("site-dev.crt", issued.certPem);
    await run("openssl", ["verify", "-CAfile", `${root}.crt`, "-untrusted", leaf, leaf]);
    const crl = await save(
      "inter.crl",
      await buildCrl(intermediate, [{ serial: issued.serial, revokedAt: new Date() }]),
    );
    await run("openssl", ["crl", "-in", crl, "-CAfile", `${inter}.crt`, "-noout"]);

    // The root's key does not match the intermediate, and the root is not the leaf's issuer chain start.
    await assert.rejects(
      loadCaFiles({ certFile: `${inter}.crt`, keyFile: `${root}.key` }),
      /does not belong/,
    );
  });
});

describe("CRLs from buildCrl in Node's TLS", () => {
  it("a revoked client certificate is refused at the handshake, a valid one accepted", async () => {
    const good = await issueWithNewKey(ca, { deviceId: "good" });
    const bad = await issueWithNewKey(ca, { deviceId: "bad" });
    const crl = await buildCrl(ca, [{ serial: bad.serial, revokedAt: new Date() }]);
    const options = {
      cert: serverPki.read(serverPki.serverCert),
      key: serverPki.read(serverPki.serverKey),
      ca: ca.certPem,
      crl,
      requestCert: true,
    };
    /** Starts a server, runs one client handshake, returns what each side saw. */
    const handshake = async (
      device: { certPem: string; keyPem: string },
      rejectUnauthorized: boolean,
    ): Promise<{ clientReceived: string; serverVerdict: string | undefined }> => {
      let serverVerdict: string | undefined;
      const server = createServer({ ...options, rejectUnauthorized }, (socket: TLSSocket) => {
        serverVerdict = socket.authorized
          ? `authorized ${socket.getPeerCertificate().serialNumber}`
          : String(socket.authorizationError);
        socket.end("hello");
      });
      server.on("tlsClientError", () => {});
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      const { port } = server.address() as AddressInfo;
      try {
        const clientReceived = await new Promise<string>((resolve) => {
          const socket = tlsConnect({
            port,
            host: "127.0.0.1",
            ca: serverPki.read(serverPki.caCert),
            cert: device.certPem,
            key: device.keyPem,
          });
          let received = "";
          socket.on("data", (chunk) => {
            received += chunk;
          });
          socket.on("error", () => {});
          socket.on("close", () => resolve(received));
        });
        return { clientReceived, serverVerdict };
      } finally {
        await new Promise((resolve) => server.close(resolve));
      }
    };
    assert.deepEqual(await handshake(good, true), {
      clientReceived: "hello",
      serverVerdict: `authorized ${good.serial}`,
    });
    // Node closes the handshake of an unauthorized peer without telling anyone why...
    assert.deepEqual(await handshake(bad, true), { clientReceived: "", serverVerdict: undefined });
    // ...so the reason is read where Node reports it, on a server that only requests certificates.
    assert.equal((await handshake(bad, false)).serverVerdict, "CERT_REVOKED");
  });
});

describe("sluice ca commands", () => {
  const io = () => {
    const out: string[] = [];
    const err: string[] = [];
    const sink = (into: string[]) =>
      ({
        write: (text: string) => {
          into.push(text);
          return true;
        },
      }) as unknown as NodeJS.WritableStream;
    return {
      stdout: sink(out),
      stderr: sink(err),
      out: () => out.join(""),
      err: () => err.join(""),
    };
  };

  it("init writes the CA with a private key file and an empty CRL, and refuses to overwrite", async () => {
    const caDir = join(dir, "cli-init");
    const first = io();
    assert.equal(
      await runCaCommand(["init", "--dir", caDir, "--cn", "Line 3 CA", "--days", "30"], first),
      0,
      first.err(),
    );
    assert.equal((await stat(join(caDir, "ca.key"))).mode & 0o777, 0o600);
    assert.match(first.out(), /CN=Line 3 CA/);
    assert.doesNotMatch(first.out(), /PRIVATE KEY/);
    assert.deepEqual(await readRevokedSerials(join(caDir, "ca.crl")), new Set());
    const keyBefore = await readFile(join(caDir, "ca.key"), "utf8");
    const again = io();
    assert.equal(await runCaCommand(["init", "--dir", caDir], again), 2);
    assert.match(again.err(), /already exists; refusing to overwrite/);
    assert.equal(await readFile(join(caDir, "ca.key"), "utf8"), keyBefore);
  });

  it("usage errors exit 2 with the usage text", async () => {
    for (const args of [
      [],
      ["frobnicate"],
      ["init"],
      ["issue", "--dir", dir],
      ["init", "--dir", dir, "--days", "ten"],
      ["revoke", "--dir", dir, "--bogus", "1"],
    ]) {
      const out = io();
      assert.equal(await runCaCommand(args, out), 2, args.join(" "));
      assert.match(out.err(), /Device CA \(a local CA folder\):/);
    }
  });

  it("issue with and without a CSR, then revoke, rewrites a CRL OpenSSL enforces", async () => {
    const caDir = join(dir, "cli-flow");
    await caInit({ dir: caDir, commonName: "Flow CA" });
    const withKey = await caIssue({
      dir: caDir,
      deviceId: "meter-1",
      outPrefix: join(dir, "meter-1"),
      validityDays: 0.5,
    });
    assert.equal((await stat(withKey.keyFile as string)).mode & 0o777, 0o600);
    const csr = await save("meter-2.csr", await opensslCsr("meter-2", "/CN=meter-2", "EC"));
    const out = io();
    assert.equal(
      await runCaCommand(
        ["issue", "--dir", caDir, "--id", "meter-2", "--csr", csr, "--out", join(dir, "meter-2")],
        out,
      ),
      0,
      out.err(),
    );
    assert.match(out.out(), /serial [0-9A-F]+/);
    const wrongCn = io();
    assert.equal(
      await runCaCommand(
        ["issue", "--dir", caDir, "--id", "meter-3", "--csr", csr, "--out", join(dir, "meter-3")],
        wrongCn,
      ),
      2,
    );
    assert.match(wrongCn.err(), /asks for CN "meter-2"/);
    const again = io();
    assert.equal(
      await runCaCommand(
        ["issue", "--dir", caDir, "--id", "meter-1", "--out", join(dir, "meter-1")],
        again,
      ),
      2,
    );

    const revoked = await caRevoke({ dir: caDir, certFile: withKey.certFile });
    assert.equal(revoked.serial, withKey.serial);
    const twice = await caRevoke({ dir: caDir, serial: withKey.serial.toLowerCase() });
    assert.equal(twice.alreadyRevoked, true);
    assert.equal(twice.revokedCount, 1);
    assert.deepEqual(await readRevokedSerials(join(caDir, "ca.crl")), new Set([withKey.serial]));
    const verify = [
      "verify",
      "-crl_check",
      "-CRLfile",
      join(caDir, "ca.crl"),
      "-CAfile",
      join(caDir, "ca.crt"),
    ];
    await assert.rejects(run("openssl", [...verify, withKey.certFile]), /revoked/);
    await run("openssl", [...verify, join(dir, "meter-2.crt")]);

    const foreign = await issueWithNewKey(ca, { deviceId: "foreign" });
    const foreignFile = await save("foreign.crt", foreign.certPem);
    const refused = io();
    assert.equal(await runCaCommand(["revoke", "--dir", caDir, "--cert", foreignFile], refused), 2);
    assert.match(refused.err(), /not issued by this CA/);
    const missing = io();
    assert.equal(await runCaCommand(["crl", "--dir", join(dir, "no-such-ca")], missing), 2);
    assert.match(missing.err(), /cannot read the CA certificate/);
  });

  it("a device enrolled by the CLI connects over mTLS as itself until revoked and the listener reloads", async () => {
    const caDir = join(dir, "cli-node");
    await caInit({ dir: caDir, commonName: "Node CA" });
    const meter = await caIssue({
      dir: caDir,
      deviceId: "meter-7",
      outPrefix: join(dir, "meter-7"),
    });
    const other = await caIssue({
      dir: caDir,
      deviceId: "meter-8",
      outPrefix: join(dir, "meter-8"),
    });
    const running = await startNode(
      {
        listeners: [
          {
            type: "tls",
            host: "127.0.0.1",
            port: 0,
            cert: serverPki.serverCert,
            key: serverPki.serverKey,
            ca: join(caDir, "ca.crt"),
            crl: join(caDir, "ca.crl"),
            requestCert: true,
            requireClientCert: true,
          },
        ],
        auth: { allowAnonymous: false, certificateIdentity: "cn-is-clientid" },
      },
      caDir,
    );
    const asDevice = async (
      files: { certFile: string; keyFile?: string | undefined },
      clientId: string,
    ) =>
      connect(running.urls.tls as string, {
        clientId,
        ca: serverPki.read(serverPki.caCert),
        cert: await readFile(files.certFile),
        key: await readFile(files.keyFile as string),
      });
    const device = await asDevice(meter, "meter-7");
    const bystander = await asDevice(other, "meter-8");
    try {
      assert.equal(device.connected, true);
      await assert.rejects(asDevice(meter, "meter-8"), "the CN is the only client id it may use");
      const closed = new Promise<void>((resolve) => device.once("close", () => resolve()));
      await caRevoke({ dir: caDir, serial: meter.serial });
      await running.node.reload();
      await closed;
      assert.equal(bystander.connected, true);
      await assert.rejects(asDevice(meter, "meter-7"), "refused at the handshake");
    } finally {
      await end(device, bystander);
      await running.stop();
    }
  });
});
