import { mkdir, readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { UsageError } from "../errors.js";
import { replaceFile } from "../files/replace-file.js";
import { buildCrl } from "./build-crl.js";
import { caDirectory, loadCaDirectory } from "./ca-directory.js";
import { PRIVATE_FILE_MODE, PUBLIC_FILE_MODE, refuseExisting, writeNewFile } from "./ca-files.js";
import { createCa } from "./create-ca.js";
import { validateDeviceId } from "./device-id.js";
import { issueFromCsr, issueWithNewKey } from "./issue-certificate.js";
import { isKeyAlgorithmName, type KeyAlgorithmName } from "./key-algorithms.js";
import { loadCa } from "./load-ca.js";
import { readSinglePem } from "./pem.js";
import { PkiInputError } from "./pki-error.js";
import { PEM_MAX_BYTES } from "./pki-limits.js";
import { readRevocationFile, writeRevocationFile } from "./revocation-file.js";
import { parseSerialNumber } from "./serial-number.js";
import { x509 } from "./x509.js";

export interface CaCommandIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

export const CA_USAGE = `Device CA (a local CA folder):
  sluice ca init   --dir DIR [--cn NAME] [--days N] [--key-algorithm P-256|P-384|RSA-2048|RSA-3072|RSA-4096]
  sluice ca init   --dir DIR --cert FILE --key FILE [--chain FILE]   (use an existing intermediate)
  sluice ca issue  --dir DIR --id DEVICE [--csr FILE] [--days N] [--out PREFIX] [--key-algorithm ALG]
  sluice ca revoke --dir DIR (--serial HEX | --cert FILE) [--crl-hours N]
  sluice ca crl    --dir DIR [--crl-hours N]   (re-sign the CRL before it expires)`;

export interface CaInitOptions {
  dir: string;
  commonName?: string;
  validityDays?: number;
  keyAlgorithm?: KeyAlgorithmName;
  /** An operator's CA certificate and key to use instead of creating a root. */
  existing?: { certFile: string; keyFile: string; chainFile?: string };
  crlHours?: number;
}

export interface CaInitResult {
  certFile: string;
  keyFile: string;
  crlFile: string;
  subject: string;
  notAfter: Date;
}

/**
 * Creates a CA directory: a new root CA, or a copy of an operator's intermediate once it has
 * been checked, plus an empty revocation list and CRL so listeners can point at `ca.crl` from
 * the start. Never overwrites an existing CA.
 */
export async function caInit(options: CaInitOptions): Promise<CaInitResult> {
  const files = caDirectory(options.dir);
  let certPem: string;
  let keyPem: string;
  let chainPem: string | undefined;
  if (options.existing === undefined) {
    ({ certPem, keyPem } = await createCa({
      commonName: options.commonName ?? "Sluice Device CA",
      ...(options.validityDays === undefined ? {} : { validityDays: options.validityDays }),
      ...(options.keyAlgorithm === undefined ? {} : { keyAlgorithm: options.keyAlgorithm }),
    }));
  } else {
    const read = (path: string, what: string) =>
      readFile(path, "utf8").catch((error: NodeJS.ErrnoException) => {
        throw new PkiInputError(`cannot read ${what} ${path} (${error.code ?? error})`);
      });
    certPem = await read(options.existing.certFile, "the CA certificate");
    keyPem = await read(options.existing.keyFile, "the CA key");
    if (options.existing.chainFile !== undefined) {
      chainPem = await read(options.existing.chainFile, "the CA chain");
    }
  }
  // Proves the material works (and normalizes the chain) before anything is written.
  const ca = await loadCa({ certPem, keyPem, ...(chainPem === undefined ? {} : { chainPem }) });
  await refuseExisting([files.keyFile, files.certFile, files.chainFile]);
  await mkdir(options.dir, { recursive: true, mode: 0o700 });
  await writeNewFile(files.keyFile, keyPem, PRIVATE_FILE_MODE);
  await writeNewFile(files.certFile, ca.certPem, PUBLIC_FILE_MODE);
  if (ca.chainPem !== "") await writeNewFile(files.chainFile, ca.chainPem, PUBLIC_FILE_MODE);
  await writeRevocationFile(files.revokedFile, []);
  const crl = await buildCrl(ca, [], crlOptions(options.crlHours));
  await replaceFile(files.crlFile, crl, PUBLIC_FILE_MODE);
  return {
    certFile: files.certFile,
    keyFile: files.keyFile,
    crlFile: files.crlFile,
    subject: ca.certificate.subject,
    notAfter: ca.certificate.notAfter,
  };
}

export interface CaIssueOptions {
  dir: string;
  deviceId: string;
  /** The device's CSR; without one a key pair is generated and written to PREFIX.key. */
  csrFile?: string;
  validityDays?: number;
  keyAlgorithm?: KeyAlgorithmName;
  /** Output path prefix; default: the device id, in the current folder. */
  outPrefix?: string;
}

export interface CaIssueResult {
  certFile: string;
  keyFile?: string;
  serial: string;
  notAfter: Date;
}

/** Issues a device certificate from the CA directory, to PREFIX.crt (and PREFIX.key). */
export async function caIssue(options: CaIssueOptions): Promise<CaIssueResult> {
  const deviceId = validateDeviceId(options.deviceId);
  const prefix = options.outPrefix ?? deviceId;
  const certFile = `${prefix}.crt`;
  const keyFile = `${prefix}.key`;
  await refuseExisting(options.csrFile === undefined ? [certFile, keyFile] : [certFile]);
  const ca = await loadCaDirectory(caDirectory(options.dir));
  const common = {
    deviceId,
    ...(options.validityDays === undefined ? {} : { validityDays: options.validityDays }),
  };
  if (options.csrFile !== undefined) {
    const csrPem = await readFile(options.csrFile, "utf8").catch((error: NodeJS.ErrnoException) => {
      throw new PkiInputError(`cannot read the CSR ${options.csrFile} (${error.code ?? error})`);
    });
    const issued = await issueFromCsr(ca, csrPem, common);
    await writeNewFile(certFile, issued.certPem, PUBLIC_FILE_MODE);
    return { certFile, serial: issued.serial, notAfter: issued.notAfter };
  }
  const issued = await issueWithNewKey(ca, {
    ...common,
    ...(options.keyAlgorithm === undefined ? {} : { keyAlgorithm: options.keyAlgorithm }),
  });
  // The key first: if it cannot be written, no certificate exists for a key nobody has.
  await writeNewFile(keyFile, issued.keyPem, PRIVATE_FILE_MODE);
  await writeNewFile(certFile, issued.certPem, PUBLIC_FILE_MODE);
  return { certFile, keyFile, serial: issued.serial, notAfter: issued.notAfter };
}

export interface CaRevokeOptions {
  dir: string;
  /** The serial (hex) or a certificate file to take it from; exactly one. */
  serial?: string;
  certFile?: string;
  crlHours?: number;
  now?: Date;
}

export interface CaRevokeResult {
  serial: string;
  /** True when the serial was already on the list (the CRL is re-signed anyway). */
  alreadyRevoked: boolean;
  crlFile: string;
  revokedCount: number;
}

/** Adds a serial to `revoked.json` and rewrites `ca.crl`; listeners reload it on change. */
export async function caRevoke(options: CaRevokeOptions): Promise<CaRevokeResult> {
  const files = caDirectory(options.dir);
  const ca = await loadCaDirectory(files);
  const serial = await serialToRevoke(options, ca.certificate);
  const revoked = await readRevocationFile(files.revokedFile);
  const alreadyRevoked = revoked.some((entry) => entry.serial === serial);
  if (!alreadyRevoked) revoked.push({ serial, revokedAt: options.now ?? new Date() });
  const crl = await buildCrl(ca, revoked, crlOptions(options.crlHours, options.now));
  // The list first: a CRL is always rebuilt from it, never the other way round.
  await writeRevocationFile(files.revokedFile, revoked);
  await replaceFile(files.crlFile, crl, PUBLIC_FILE_MODE);
  return { serial, alreadyRevoked, crlFile: files.crlFile, revokedCount: revoked.length };
}

/** Re-signs `ca.crl` from `revoked.json` with a fresh nextUpdate (run it from cron). */
export async function caCrl(options: {
  dir: string;
  crlHours?: number;
  now?: Date;
}): Promise<{ crlFile: string; revokedCount: number; nextUpdate: Date }> {
  const files = caDirectory(options.dir);
  const ca = await loadCaDirectory(files);
  const revoked = await readRevocationFile(files.revokedFile);
  const crl = await buildCrl(ca, revoked, crlOptions(options.crlHours, options.now));
  await replaceFile(files.crlFile, crl, PUBLIC_FILE_MODE);
  const nextUpdate = new x509.X509Crl(crl).nextUpdate ?? new Date(0);
  return { crlFile: files.crlFile, revokedCount: revoked.length, nextUpdate };
}

async function serialToRevoke(
  options: CaRevokeOptions,
  caCertificate: x509.X509Certificate,
): Promise<string> {
  if ((options.serial === undefined) === (options.certFile === undefined)) {
    throw new UsageError("give exactly one of --serial and --cert");
  }
  if (options.serial !== undefined) return parseSerialNumber(options.serial);
  const pem = await readFile(options.certFile as string, "utf8").catch(
    (error: NodeJS.ErrnoException) => {
      throw new PkiInputError(`cannot read ${options.certFile} (${error.code ?? error})`);
    },
  );
  // An issued file may carry the chain after the device certificate: the first block is it.
  const first = pem.slice(0, pem.indexOf("-----END CERTIFICATE-----") + 26);
  const block = readSinglePem(first, options.certFile as string, PEM_MAX_BYTES.certificate, [
    "CERTIFICATE",
  ]);
  const certificate = new x509.X509Certificate(new Uint8Array(block.der));
  // A CRL can only revoke what its issuer signed; anything else would be silently useless.
  const signedByCa = await certificate
    .verify({ publicKey: caCertificate.publicKey, signatureOnly: true })
    .catch(() => false);
  if (!signedByCa) {
    throw new PkiInputError(`${options.certFile} was not issued by this CA`);
  }
  return parseSerialNumber(certificate.serialNumber);
}

function crlOptions(hours: number | undefined, now?: Date) {
  return { ...(hours === undefined ? {} : { nextUpdateHours: hours }), ...(now ? { now } : {}) };
}

/**
 * `sluice ca SUBCOMMAND ...` (args after "ca"). Prints what it wrote, never a key. Exit codes
 * as everywhere: 0 done, 2 usage or refused input (including "would overwrite"), 1 failure.
 */
export async function runCaCommand(args: readonly string[], io: CaCommandIo): Promise<number> {
  try {
    const [subcommand, ...rest] = args;
    switch (subcommand) {
      case "init": {
        const values = parse(rest, [
          "dir",
          "cn",
          "days",
          "key-algorithm",
          "cert",
          "key",
          "chain",
          "crl-hours",
        ]);
        const existing = values.cert !== undefined || values.key !== undefined;
        if (existing && (values.cert === undefined || values.key === undefined)) {
          throw new UsageError("--cert and --key go together");
        }
        if (existing && (values.cn ?? values.days ?? values["key-algorithm"]) !== undefined) {
          throw new UsageError(
            "--cn, --days and --key-algorithm apply to a new CA, not to --cert/--key",
          );
        }
        if (!existing && values.chain !== undefined)
          throw new UsageError("--chain needs --cert and --key");
        const result = await caInit({
          dir: required(values, "dir"),
          ...optional("commonName", values.cn),
          ...optional("validityDays", numberOption(values, "days")),
          ...optional("keyAlgorithm", keyAlgorithmOption(values)),
          ...optional("crlHours", numberOption(values, "crl-hours")),
          ...(existing
            ? {
                existing: {
                  certFile: values.cert as string,
                  keyFile: values.key as string,
                  ...optional("chainFile", values.chain),
                },
              }
            : {}),
        });
        io.stdout.write(
          `CA ${result.subject} (valid until ${result.notAfter.toISOString()})\n` +
            `wrote ${result.certFile}, ${result.keyFile} (mode 0600) and ${result.crlFile}\n`,
        );
        return 0;
      }
      case "issue": {
        const values = parse(rest, ["dir", "id", "csr", "days", "out", "key-algorithm"]);
        if (values.csr !== undefined && values["key-algorithm"] !== undefined) {
          throw new UsageError(
            "--key-algorithm applies only without --csr (the CSR brings the key)",
          );
        }
        const result = await caIssue({
          dir: required(values, "dir"),
          deviceId: required(values, "id"),
          ...optional("csrFile", values.csr),
          ...optional("validityDays", numberOption(values, "days")),
          ...optional("outPrefix", values.out),
          ...optional("keyAlgorithm", keyAlgorithmOption(values)),
        });
        io.stdout.write(
          `issued ${result.certFile}${result.keyFile ? ` and ${result.keyFile} (mode 0600)` : ""}` +
            ` serial ${result.serial}, valid until ${result.notAfter.toISOString()}\n`,
        );
        return 0;
      }
      case "revoke": {
        const values = parse(rest, ["dir", "serial", "cert", "crl-hours"]);
        const result = await caRevoke({
          dir: required(values, "dir"),
          ...optional("serial", values.serial),
          ...optional("certFile", values.cert),
          ...optional("crlHours", numberOption(values, "crl-hours")),
        });
        io.stdout.write(
          `${result.alreadyRevoked ? "already revoked" : "revoked"} serial ${result.serial}; ` +
            `${result.crlFile} lists ${result.revokedCount}\n`,
        );
        return 0;
      }
      case "crl": {
        const values = parse(rest, ["dir", "crl-hours"]);
        const result = await caCrl({
          dir: required(values, "dir"),
          ...optional("crlHours", numberOption(values, "crl-hours")),
        });
        io.stdout.write(
          `wrote ${result.crlFile} (${result.revokedCount} revoked, next update ${result.nextUpdate.toISOString()})\n`,
        );
        return 0;
      }
      default:
        throw new UsageError(
          subcommand === undefined
            ? "a subcommand is required"
            : `unknown subcommand ${subcommand}`,
        );
    }
  } catch (error) {
    if (error instanceof UsageError) {
      io.stderr.write(`sluice ca: ${error.message}\n${CA_USAGE}\n`);
      return 2;
    }
    if (error instanceof PkiInputError) {
      io.stderr.write(`sluice ca: ${error.message}\n`);
      return 2;
    }
    const code = (error as NodeJS.ErrnoException).code;
    io.stderr.write(`sluice ca: ${code ? `${code}: ` : ""}${(error as Error).message}\n`);
    return 1;
  }
}

type Values = Record<string, string | undefined>;

function parse(args: readonly string[], names: readonly string[]): Values {
  try {
    const { values } = parseArgs({
      args: [...args],
      options: Object.fromEntries(names.map((name) => [name, { type: "string" as const }])),
      allowPositionals: false,
      strict: true,
    });
    return values as Values;
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

function required(values: Values, name: string): string {
  const value = values[name];
  if (value === undefined || value === "") throw new UsageError(`--${name} is required`);
  return value;
}

function optional<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V };
}

function numberOption(values: Values, name: string): number | undefined {
  const text = values[name];
  if (text === undefined) return undefined;
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value)) {
    throw new UsageError(`--${name} must be a number, not "${text}"`);
  }
  return value;
}

function keyAlgorithmOption(values: Values): KeyAlgorithmName | undefined {
  const name = values["key-algorithm"];
  if (name === undefined) return undefined;
  if (!isKeyAlgorithmName(name)) throw new UsageError(`unknown --key-algorithm ${name}`);
  return name;
}
