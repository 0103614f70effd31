import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { parseArgs } from "node:util";
import { SluiceError, UsageError } from "../errors.js";

/** Where output goes; the process streams in production, buffers in tests. */
export interface CliIo {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
  env: NodeJS.ProcessEnv;
}

/** The API refused the request (4xx): the caller's input, like a usage error. */
export class ApiRefusedError extends SluiceError {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super("ADMIN_API_REFUSED", message);
  }
}

export const ADMIN_USAGE = `Admin commands (against a running node's admin API):
  sluice admin-token                        print a new bearer token and the digest for admin.tokens
  sluice device add ID [--group G]... [--no-password] [--disabled] [--scram | --scram-verifier-file FILE]
  sluice device list [--after ID] [--limit N]
  sluice device get|disable|enable|rm ID
  sluice device rotate ID [--scram | --no-scram | --scram-verifier-file FILE]
                                            --scram keeps the password as a SCRAM-SHA-256 verifier
                                            (MQTT 5 AUTH); a verifier file holds one made elsewhere
  sluice device enroll ID [--csr FILE] [--days N] [--out PREFIX]   issue a client certificate
  sluice device token ID [--ttl SECONDS]    one-time enrollment token for the device
  sluice sessions list | sluice sessions kick CLIENT_ID
  sluice ca issue --id ID [--csr FILE] [--days N] [--out PREFIX] --api URL   (= device enroll)
  sluice ca revoke --serial HEX --api URL   revoke a certificate cluster-wide
  sluice enroll --id ID --token TOKEN [--csr FILE] --out PREFIX    (on the device: no admin token)
  Options: --api URL (or SLUICE_ADMIN_URL), --ca FILE (or SLUICE_ADMIN_CA) to trust an https API;
  the admin token comes from SLUICE_ADMIN_TOKEN or --token-file FILE, never the command line.`;

const common = {
  api: { type: "string" },
  ca: { type: "string" },
  "token-file": { type: "string" },
} as const;

/** Prints a new random bearer token and the SHA-256 digest that goes into `admin.tokens`. */
export function adminToken(io: CliIo): number {
  const token = randomBytes(32).toString("base64url");
  const digest = createHash("sha256").update(token).digest("hex");
  io.stdout.write(`token:  ${token}\ndigest: ${digest}\n`);
  io.stderr.write(
    "Give the token to the admin client (SLUICE_ADMIN_TOKEN); put only the digest in admin.tokens.\n",
  );
  return 0;
}

/** `sluice device ...`, `sluice sessions ...`, `sluice enroll` and `sluice ca revoke --api`. */
export async function runAdminCommand(command: string, args: string[], io: CliIo): Promise<number> {
  switch (command) {
    case "device":
      return device(args, io);
    case "sessions":
      return sessions(args, io);
    case "enroll":
      return enroll(args, io);
    case "ca-revoke":
      return caRevoke(args, io);
    case "ca-issue":
      return caIssue(args, io);
    default:
      throw new UsageError(`unknown command: ${command}`);
  }
}

async function device(args: string[], io: CliIo): Promise<number> {
  const [action, ...rest] = args;
  const { values, positionals } = parse(rest, {
    group: { type: "string", multiple: true },
    "no-password": { type: "boolean" },
    disabled: { type: "boolean" },
    scram: { type: "boolean" },
    "no-scram": { type: "boolean" },
    "scram-verifier-file": { type: "string" },
    after: { type: "string" },
    limit: { type: "string" },
    csr: { type: "string" },
    days: { type: "string" },
    out: { type: "string" },
    ttl: { type: "string" },
  });
  const api = client(values, io, true);
  const id = (): string => {
    const [value] = positionals;
    if (value === undefined || positionals.length > 1)
      throw new UsageError(`device ${action} takes one device id`);
    return encodeURIComponent(value);
  };
  switch (action) {
    case "add":
      return print(
        io,
        await api.call("POST", "/api/v1/devices", {
          id: decodeURIComponent(id()),
          groups: (values.group as string[] | undefined) ?? [],
          enabled: values.disabled !== true,
          password: values["no-password"] !== true,
          ...scramChoice(values, decodeURIComponent(id())),
        }),
      );
    case "list": {
      const query = new URLSearchParams();
      if (typeof values.after === "string") query.set("after", values.after);
      if (typeof values.limit === "string") query.set("limit", values.limit);
      const suffix = query.size > 0 ? `?${query}` : "";
      return print(io, await api.call("GET", `/api/v1/devices${suffix}`));
    }
    case "get":
      return print(io, await api.call("GET", `/api/v1/devices/${id()}`));
    case "disable":
    case "enable":
      return print(
        io,
        await api.call("PATCH", `/api/v1/devices/${id()}`, { enabled: action === "enable" }),
      );
    case "rotate":
      return print(
        io,
        await api.call(
          "POST",
          `/api/v1/devices/${id()}/rotate`,
          scramChoice(values, decodeURIComponent(id())),
        ),
      );
    case "rm":
      await api.call("DELETE", `/api/v1/devices/${id()}`);
      io.stderr.write(`device ${decodeURIComponent(id())} deleted\n`);
      return 0;
    case "token":
      return print(
        io,
        await api.call("POST", `/api/v1/devices/${id()}/enrollment-token`, {
          ...(typeof values.ttl === "string" ? { ttlSeconds: integer(values.ttl, "--ttl") } : {}),
        }),
      );
    case "enroll": {
      const issued = await api.call("POST", `/api/v1/devices/${id()}/certificate`, {
        ...(typeof values.csr === "string" ? { csr: readText(values.csr, "--csr") } : {}),
        ...(typeof values.days === "string"
          ? { validityDays: integer(values.days, "--days") }
          : {}),
      });
      return saveCertificate(issued, values.out as string | undefined, io);
    }
    default:
      throw new UsageError(
        "device needs one of: add, list, get, disable, enable, rotate, rm, enroll, token",
      );
  }
}

/**
 * --scram, --no-scram and --scram-verifier-file as the API takes them. A verifier is read from a
 * file (like a password hash, it is kept off the process list): the verifier alone, or the
 * device's line of a file `sluice passwd --scram FILE ID` wrote.
 */
function scramChoice(
  values: Record<string, unknown>,
  deviceId: string,
): { scram?: boolean; scramVerifier?: string } {
  if (values.scram === true && values["no-scram"] === true) {
    throw new UsageError("--scram and --no-scram cannot be combined");
  }
  const file = values["scram-verifier-file"];
  return {
    ...(values.scram === true ? { scram: true } : {}),
    ...(values["no-scram"] === true ? { scram: false } : {}),
    ...(typeof file === "string" ? { scramVerifier: verifierIn(file, deviceId) } : {}),
  };
}

function verifierIn(file: string, deviceId: string): string {
  const lines = readText(file, "--scram-verifier-file").split("\n");
  const line = lines.find((l) => l.startsWith(`${deviceId}:`)) ?? lines[0] ?? "";
  return (line.startsWith(`${deviceId}:`) ? line.slice(deviceId.length + 1) : line).trim();
}

async function sessions(args: string[], io: CliIo): Promise<number> {
  const [action, ...rest] = args;
  const { values, positionals } = parse(rest, {});
  const api = client(values, io, true);
  if (action === "list" && positionals.length === 0)
    return print(io, await api.call("GET", "/api/v1/sessions"));
  if (action === "kick" && positionals.length === 1) {
    await api.call("DELETE", `/api/v1/sessions/${encodeURIComponent(positionals[0] as string)}`);
    io.stderr.write(`client ${positionals[0]} disconnected\n`);
    return 0;
  }
  throw new UsageError("sessions list | sessions kick CLIENT_ID");
}

/** The device side of factory provisioning: a one-time token buys a certificate. */
async function enroll(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    id: { type: "string" },
    token: { type: "string" },
    csr: { type: "string" },
    out: { type: "string" },
  });
  if (positionals.length > 0 || typeof values.id !== "string" || typeof values.out !== "string") {
    throw new UsageError("enroll --id ID --token TOKEN [--csr FILE] --out PREFIX");
  }
  // The one-time token may come from the environment, to keep it out of the process list.
  const token = typeof values.token === "string" ? values.token : io.env.SLUICE_ENROLL_TOKEN;
  if (token === undefined) throw new UsageError("enroll needs --token or SLUICE_ENROLL_TOKEN");
  const api = client(values, io, false);
  const issued = await api.call("POST", "/api/v1/enroll", {
    id: values.id,
    token,
    ...(typeof values.csr === "string" ? { csr: readText(values.csr, "--csr") } : {}),
  });
  return saveCertificate(issued, values.out, io);
}

/** `ca issue --id ID` against the API: the same as `device enroll ID`. */
async function caIssue(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    id: { type: "string" },
    csr: { type: "string" },
    days: { type: "string" },
    out: { type: "string" },
  });
  if (positionals.length > 0 || typeof values.id !== "string") {
    throw new UsageError("ca issue --id DEVICE [--csr FILE] [--days N] [--out PREFIX] --api URL");
  }
  const forward = ["enroll", values.id];
  for (const option of ["csr", "days", "out", "api", "ca", "token-file"] as const) {
    const value = values[option];
    if (typeof value === "string") forward.push(`--${option}`, value);
  }
  return device(forward, io);
}

async function caRevoke(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, { serial: { type: "string" } });
  if (positionals.length > 0 || typeof values.serial !== "string") {
    throw new UsageError("ca revoke --serial HEX --api URL");
  }
  await client(values, io, true).call("POST", "/api/v1/certificates/revoke", {
    serial: values.serial,
  });
  io.stderr.write(`certificate ${values.serial} revoked\n`);
  return 0;
}

type Values = Record<string, string | boolean | string[] | boolean[] | undefined>;

function parse(
  args: string[],
  options: Record<string, { type: "string" | "boolean"; multiple?: boolean }>,
): { values: Values; positionals: string[] } {
  try {
    return parseArgs({
      args,
      options: { ...common, ...options },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

interface ApiClient {
  call(method: string, path: string, body?: unknown): Promise<unknown>;
}

function client(values: Values, io: CliIo, withToken: boolean): ApiClient {
  const base = (values.api as string | undefined) ?? io.env.SLUICE_ADMIN_URL;
  if (base === undefined) throw new UsageError("--api URL (or SLUICE_ADMIN_URL) is required");
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    throw new UsageError(`--api: not a URL: ${base}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw new UsageError("--api must be http:// or https://");
  const caFile = (values.ca as string | undefined) ?? io.env.SLUICE_ADMIN_CA;
  const ca = caFile === undefined ? undefined : readText(caFile, "--ca");
  let token: string | undefined;
  if (withToken) {
    const file = values["token-file"] as string | undefined;
    token = file === undefined ? io.env.SLUICE_ADMIN_TOKEN : readText(file, "--token-file").trim();
    if (token === undefined || token === "") {
      throw new UsageError("the admin token comes from SLUICE_ADMIN_TOKEN or --token-file FILE");
    }
  }
  return {
    call: (method, path, body) => send(url, method, path, body, token, ca),
  };
}

function send(
  base: URL,
  method: string,
  path: string,
  body: unknown,
  token: string | undefined,
  ca: string | undefined,
): Promise<unknown> {
  const target = new URL(path, base);
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const headers: Record<string, string | number> = { accept: "application/json" };
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  if (payload !== undefined) {
    headers["content-type"] = "application/json";
    headers["content-length"] = payload.length;
  }
  const request = target.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(
      target,
      { method, headers, timeout: 30_000, ...(ca === undefined ? {} : { ca }) },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("error", reject);
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let json: unknown;
          try {
            json = text === "" ? undefined : JSON.parse(text);
          } catch {
            json = text;
          }
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) return resolve(json);
          const detail = json as { error?: string; details?: string[] } | undefined;
          const message = [detail?.error ?? `HTTP ${status}`, ...(detail?.details ?? [])].join(
            "\n  ",
          );
          if (status >= 400 && status < 500)
            reject(new ApiRefusedError(status, `${status}: ${message}`));
          else reject(new Error(`admin API answered ${status}: ${message}`));
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error("admin API did not answer within 30 s")));
    req.on("error", reject);
    req.end(payload);
  });
}

function print(io: CliIo, value: unknown): number {
  io.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  return 0;
}

async function saveCertificate(
  issued: unknown,
  out: string | undefined,
  io: CliIo,
): Promise<number> {
  const certificate = issued as {
    certificate: string;
    privateKey?: string;
    ca: string;
    serial: string;
    notAfter: string;
  };
  if (out === undefined) return print(io, issued);
  await writeFile(`${out}.crt`, certificate.certificate, { mode: 0o644 });
  await writeFile(`${out}-ca.crt`, certificate.ca, { mode: 0o644 });
  if (certificate.privateKey !== undefined) {
    await writeFile(`${out}.key`, certificate.privateKey, { mode: 0o600 });
  }
  io.stderr.write(
    `wrote ${out}.crt${certificate.privateKey === undefined ? "" : `, ${out}.key`} and ${out}-ca.crt (serial ${certificate.serial}, valid until ${certificate.notAfter})\n`,
  );
  return 0;
}

function readText(path: string, option: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    throw new UsageError(
      `${option}: cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? error})`,
    );
  }
}

function integer(text: string, option: string): number {
  const value = Number(text);
  if (!Number.isInteger(value)) throw new UsageError(`${option} must be an integer`);
  return value;
}
