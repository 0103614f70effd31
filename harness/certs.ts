import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** A throwaway PKI made with the openssl CLI at test time: nothing secret is ever committed. */
export interface TestPki {
  dir: string;
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** An unrelated CA, and a client certificate it signed (does not chain to caCert). */
  otherCaCert: string;
  strangerCert: string;
  strangerKey: string;
  /** Signed by the CA, but its validity ended before it began (openssl x509 -days -1). */
  expiredClientCert: string;
  expiredClientKey: string;
  read(path: string): Buffer;
  cleanup(): Promise<void>;
}

const SERVER_EXTENSIONS =
  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n" +
  "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n";
const CLIENT_EXTENSIONS =
  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n";

let serial = 1000;

async function ecKey(path: string): Promise<void> {
  await run("openssl", [
    "genpkey",
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-out",
    path,
  ]);
}

async function selfSignedCa(dir: string, name: string): Promise<{ cert: string; key: string }> {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.crt`);
  await ecKey(key);
  await run("openssl", [
    "req",
    "-x509",
    "-new",
    "-key",
    key,
    "-subj",
    `/CN=${name}`,
    "-days",
    "2",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
    "-out",
    cert,
  ]);
  return { cert, key };
}

/** Issues a leaf certificate signed by `ca`; `days` may be negative to make it already expired. */
async function issue(
  dir: string,
  ca: { cert: string; key: string },
  name: string,
  cn: string,
  extensions: string,
  days = 2,
): Promise<{ cert: string; key: string }> {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.crt`);
  const ext = join(dir, `${name}.ext`);
  await ecKey(key);
  await writeFile(ext, extensions);
  await run("openssl", ["req", "-new", "-key", key, "-subj", `/CN=${cn}`, "-out", csr]);
  await run("openssl", [
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    ca.cert,
    "-CAkey",
    ca.key,
    "-set_serial",
    String(++serial),
    "-days",
    String(days),
    "-extfile",
    ext,
    "-out",
    cert,
  ]);
  return { cert, key };
}

export async function createTestPki(options: { clientCn?: string } = {}): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), "sluice-pki-"));
  const [ca, otherCa] = await Promise.all([selfSignedCa(dir, "ca"), selfSignedCa(dir, "other-ca")]);
  const [server, client, stranger, expired] = await Promise.all([
    issue(dir, ca, "server", "localhost", SERVER_EXTENSIONS),
    issue(dir, ca, "client", options.clientCn ?? "device-1", CLIENT_EXTENSIONS),
    issue(dir, otherCa, "stranger", options.clientCn ?? "device-1", CLIENT_EXTENSIONS),
    issue(dir, ca, "expired", options.clientCn ?? "device-1", CLIENT_EXTENSIONS, -1),
  ]);
  return {
    dir,
    caCert: ca.cert,
    caKey: ca.key,
    serverCert: server.cert,
    serverKey: server.key,
    clientCert: client.cert,
    clientKey: client.key,
    otherCaCert: otherCa.cert,
    strangerCert: stranger.cert,
    strangerKey: stranger.key,
    expiredClientCert: expired.cert,
    expiredClientKey: expired.key,
    read: (path) => readFileSync(path),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/**
 * Revokes certificates with `openssl ca` and returns the path of the CA's new CRL (PEM). With
 * no certificate it writes a CRL that revokes nothing.
 */
export async function writeCrl(pki: TestPki, revoked: readonly string[]): Promise<string> {
  const db = await mkdtemp(join(pki.dir, "crl-"));
  const config = join(db, "ca.cnf");
  await writeFile(
    config,
    `[ ca ]\ndefault_ca = d\n[ d ]\ndatabase = ${join(db, "index.txt")}\ncrlnumber = ${join(db, "crlnumber")}\n` +
      "default_md = sha256\ndefault_crl_days = 2\n",
  );
  await writeFile(join(db, "index.txt"), "");
  await writeFile(join(db, "crlnumber"), "01\n");
  const ca = ["-config", config, "-keyfile", pki.caKey, "-cert", pki.caCert];
  for (const cert of revoked) await run("openssl", ["ca", ...ca, "-revoke", cert]);
  const crl = join(db, "ca.crl");
  await run("openssl", ["ca", ...ca, "-gencrl", "-out", crl]);
  return crl;
}

/** A fresh server certificate from the same CA (a rotation), with a new serial. */
export async function issueServerCert(pki: TestPki): Promise<{ cert: string; key: string }> {
  return issue(
    pki.dir,
    { cert: pki.caCert, key: pki.caKey },
    `server-${++serial}`,
    "localhost",
    SERVER_EXTENSIONS,
  );
}

/** Another client certificate from the same CA, for tests that need several identities. */
export async function issueClientCert(
  pki: TestPki,
  cn: string,
): Promise<{ cert: string; key: string }> {
  return issue(
    pki.dir,
    { cert: pki.caCert, key: pki.caKey },
    `client-${++serial}`,
    cn,
    CLIENT_EXTENSIONS,
  );
}

/** A listener document (as in a config file) for `tls` or `wss` on a free loopback port, using this PKI. */
export function secureListener(
  pki: TestPki,
  type: "tls" | "wss",
  clientCerts: "none" | "request" | "require" = "none",
): Record<string, unknown> {
  return {
    type,
    host: "127.0.0.1",
    port: 0,
    cert: pki.serverCert,
    key: pki.serverKey,
    ca: pki.caCert,
    requestCert: clientCerts !== "none",
    requireClientCert: clientCerts === "require",
  };
}

/** A P-256 key (`<prefix>.key`) and a CSR for it (`<prefix>.csr`) with this subject, by OpenSSL. */
export async function opensslKeyAndCsr(prefix: string, subject: string): Promise<void> {
  await run("openssl", [
    "ecparam",
    "-name",
    "prime256v1",
    "-genkey",
    "-noout",
    "-out",
    `${prefix}.key`,
  ]);
  await run("openssl", [
    "req",
    "-new",
    "-key",
    `${prefix}.key`,
    "-subj",
    subject,
    "-out",
    `${prefix}.csr`,
  ]);
}
