import { createSecureContext } from "node:tls";
import { type LoadConfigOptions, type LoadedConfig, loadConfig } from "../config/load-config.js";
import { isTlsListener, type SluiceConfig } from "../config/schema.js";
import { ConfigError } from "../errors.js";
import { readCappedFile } from "../files/read-capped-file.js";
import { loadDeviceCa } from "../registry/load-device-ca.js";
import { Acl } from "../security/acl.js";
import { PasswordFile } from "../security/password-file.js";
import { buildTlsOptions } from "../transport/tls-options.js";

/** PEM certificates, keys and CRLs; a CRL of a large fleet stays well under this. */
const TLS_FILE_MAX_BYTES = 16 * 1024 * 1024;

/**
 * The one validation path of `sluice start` and `sluice check-config`: the config itself, then
 * every file it names, loaded as a node would load it (password file and ACL parsed, TLS
 * material read and matched). Every problem is reported at once as one ConfigError.
 */
export async function loadVerifiedConfig(options: LoadConfigOptions): Promise<LoadedConfig> {
  const loaded = loadConfig(options);
  const problems = await verifyReferencedFiles(loaded.config);
  if (problems.length > 0) throw new ConfigError(problems);
  return loaded;
}

async function verifyReferencedFiles(config: SluiceConfig): Promise<string[]> {
  const checks: Array<Promise<unknown>> = [];
  config.listeners.forEach((listener, index) => {
    if (isTlsListener(listener))
      checks.push(Promise.resolve().then(() => buildTlsOptions(listener, `listeners[${index}]`)));
  });
  if (config.auth.passwordFile !== undefined)
    checks.push(PasswordFile.load(config.auth.passwordFile));
  if (config.acl !== undefined) checks.push(Acl.load(config.acl.file));
  if (config.redis?.tls !== undefined) checks.push(verifyTlsFiles("redis.tls", config.redis.tls));
  const admin = config.admin;
  if (admin?.tls !== undefined) checks.push(verifyTlsFiles("admin.tls", admin.tls));
  if (admin?.ca !== undefined) {
    checks.push(
      loadDeviceCa(admin.ca).catch((error: unknown) => {
        throw new ConfigError([`admin.ca: ${(error as Error).message}`], { cause: error });
      }),
    );
  }
  const problems: string[] = [];
  for (const outcome of await Promise.allSettled(checks)) {
    if (outcome.status === "fulfilled") continue;
    if (!(outcome.reason instanceof ConfigError)) throw outcome.reason;
    problems.push(...outcome.reason.problems);
  }
  return problems;
}

/** Client-side TLS files (Redis, the admin API's server side): readable, and the key fits. */
async function verifyTlsFiles(
  key: string,
  files: { cert?: string | undefined; key?: string | undefined; ca?: string | undefined },
): Promise<void> {
  const read = async (field: "cert" | "key" | "ca"): Promise<string | undefined> => {
    const path = files[field];
    if (path === undefined) return undefined;
    return readCappedFile({ path, maxBytes: TLS_FILE_MAX_BYTES, label: `${key}.${field}` });
  };
  const [cert, privateKey, ca] = await Promise.all([read("cert"), read("key"), read("ca")]);
  try {
    createSecureContext({
      ...(cert === undefined ? {} : { cert }),
      ...(privateKey === undefined ? {} : { key: privateKey }),
      ...(ca === undefined ? {} : { ca }),
    });
  } catch (error) {
    throw new ConfigError([`${key}: TLS material does not load: ${(error as Error).message}`], {
      cause: error,
    });
  }
}
