import { accessSync, constants } from "node:fs";
import { hostname } from "node:os";
import { dirname, resolve } from "node:path";
import { parseDocument } from "yaml";
import type { z } from "zod";
import { ConfigError } from "../errors.js";
import { readCappedFileSync } from "../files/read-capped-file.js";
import { checkConfig } from "./check-config.js";
import { visitFiles } from "./file-keys.js";
import { configSchema, FILE_KEYS, type ParsedConfig, type SluiceConfig } from "./schema.js";

/** `SLUICE_*` variables that override the file, and the key each one sets. */
export const ENV_OVERRIDES = [
  { variable: "SLUICE_NODE_ID", path: ["nodeId"] },
  { variable: "SLUICE_REDIS_URL", path: ["redis", "url"] },
  { variable: "SLUICE_LOG_LEVEL", path: ["log", "level"] },
  { variable: "SLUICE_LOG_FORMAT", path: ["log", "format"] },
  // Secrets from the environment (a Kubernetes Secret) rather than a config file on disk.
  { variable: "SLUICE_REDIS_PASSWORD", path: ["redis", "password"] },
  { variable: "SLUICE_REDIS_SENTINEL_PASSWORD", path: ["redis", "sentinelPassword"] },
] as const;

export interface LoadConfigOptions {
  /** Config file path; when absent the embedded local-only default is used. */
  file?: string | undefined;
  env?: NodeJS.ProcessEnv;
}

export interface LoadedConfig {
  config: SluiceConfig;
  /** Things an operator should know that are not errors (e.g. anonymous access is on). */
  warnings: string[];
}

/**
 * Loads the effective configuration: defaults < YAML file < SLUICE_* environment.
 * Every problem is collected and reported at once as a ConfigError; the result is frozen.
 */
export function loadConfig(options: LoadConfigOptions = {}): LoadedConfig {
  const env = options.env ?? process.env;
  const file = options.file ?? nonEmpty(env.SLUICE_CONFIG);
  const raw = file === undefined ? embeddedDefault() : readYaml(file);
  return resolveConfig(raw, {
    env,
    ...(file === undefined ? {} : { configDir: dirname(resolve(file)) }),
  });
}

/**
 * Validates a raw config document (as parsed from YAML) and applies env overrides and defaults.
 * `configDir` is the folder relative paths resolve against, and marks that a file was given.
 */
export function resolveConfig(
  raw: Record<string, unknown>,
  options: { configDir?: string; env?: NodeJS.ProcessEnv } = {},
): LoadedConfig {
  const env = options.env ?? process.env;
  const document = structuredClone(raw);
  const fromEnv = applyEnvOverrides(document, env);

  const parsed = configSchema.safeParse(document, { reportInput: true });
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.flatMap((issue) => describeIssue(issue, fromEnv)));
  }

  const config = finalize(parsed.data, options.configDir, env);
  const problems = checkConfig(config, { fileExists: isReadableFile });
  if (problems.length > 0) throw new ConfigError(problems);

  const warnings: string[] = [];
  if (config.auth.allowAnonymous) {
    warnings.push(
      options.configDir === undefined
        ? "no config file: anonymous clients are allowed because the node listens on 127.0.0.1 only"
        : "auth.allowAnonymous is true: any client may connect without credentials",
    );
  }
  return { config: deepFreeze(config), warnings };
}

/** Without a file: one local-only node, in memory, anonymous allowed (the Mosquitto 2 convention). */
function embeddedDefault(): Record<string, unknown> {
  return {
    listeners: [{ type: "tcp", host: "127.0.0.1", port: 1883 }],
    http: { host: "127.0.0.1", port: 9100 },
    auth: { allowAnonymous: true },
  };
}

/** A config file is a page of settings; past this it is a mistake or an attack on the parser. */
export const CONFIG_FILE_MAX_BYTES = 1024 * 1024;
/** YAML aliases beyond this are refused, so a "billion laughs" document cannot expand. */
const MAX_ALIAS_COUNT = 100;

function readYaml(file: string): Record<string, unknown> {
  const label = `config file ${file}`;
  const text = readCappedFileSync({ path: file, maxBytes: CONFIG_FILE_MAX_BYTES, label });
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => {
        const line = e.linePos?.[0];
        const where = line ? `line ${line.line} column ${line.col}` : "unknown position";
        return `${label}: YAML syntax error at ${where}: ${e.message.split("\n")[0]?.replace(/ at line \d+, column \d+:?$/, "")}`;
      }),
    );
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (error) {
    // yaml throws while resolving aliases: too many of them, or one that points nowhere.
    throw new ConfigError([`${label}: ${(error as Error).message}`], { cause: error });
  }
  if (value === null || value === undefined) return {};
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new ConfigError([`${label}: must be a YAML mapping of keys to values`]);
  }
  return value as Record<string, unknown>;
}

/** Writes the env overrides into the raw document; returns which dotted keys came from env. */
function applyEnvOverrides(
  raw: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Map<string, string> {
  const fromEnv = new Map<string, string>();
  for (const { variable, path } of ENV_OVERRIDES) {
    const value = nonEmpty(env[variable]);
    if (value === undefined) continue;
    let target = raw;
    for (const key of path.slice(0, -1)) {
      const next = target[key];
      if (typeof next !== "object" || next === null || Array.isArray(next)) target[key] = {};
      target = target[key] as Record<string, unknown>;
    }
    target[path[path.length - 1] as string] = value;
    fromEnv.set(path.join("."), variable);
  }
  return fromEnv;
}

function finalize(
  parsed: ParsedConfig,
  configDir: string | undefined,
  env: NodeJS.ProcessEnv,
): SluiceConfig {
  const config = structuredClone(parsed);
  // Relative paths are relative to the config file's folder (the working folder without one).
  visitFiles(config, FILE_KEYS, ({ path }) =>
    configDir ? resolve(configDir, path) : resolve(path),
  );
  return {
    ...config,
    nodeId: config.nodeId ?? defaultNodeId(env),
    auth: {
      ...config.auth,
      // A config file turns anonymous access off unless it says otherwise.
      allowAnonymous: config.auth.allowAnonymous ?? configDir === undefined,
    },
    ...(configDir === undefined ? {} : { configDir }),
  };
}

/** Host name plus process id: two live nodes on one host never share it. */
function defaultNodeId(env: NodeJS.ProcessEnv): string {
  const host =
    (env.HOSTNAME ?? hostname()).replace(/[^A-Za-z0-9._-]/g, "-").slice(0, 100) || "node";
  return `${host}-${process.pid}`;
}

export function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out === "" ? String(part) : `.${String(part)}`;
  }
  return out === "" ? "(root)" : out;
}

function describeIssue(issue: z.core.$ZodIssue, fromEnv: Map<string, string>): string[] {
  const key = formatPath(issue.path);
  const source = fromEnv.get(issue.path.join("."));
  const where = source ? `${key} (from ${source})` : key;
  switch (issue.code) {
    case "unrecognized_keys":
      return issue.keys.map((k) => `${formatPath([...issue.path, k])}: unknown key`);
    case "invalid_type":
      return [
        `${where}: must be ${article(issue.expected)}${issue.input === undefined ? " (missing)" : `, got ${describeValue(issue.input)}`}`,
      ];
    case "invalid_union":
      if ("note" in issue && issue.note === "No matching discriminator") {
        return [`${where}: must be one of tcp, tls, ws, wss`];
      }
      return [`${where}: ${issue.message}`];
    case "invalid_value":
      return [
        `${where}: must be one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}, got ${describeValue(issue.input)}`,
      ];
    default:
      return [`${where}: ${issue.message}`];
  }
}

function article(expected: string): string {
  if (expected === "array") return "a list";
  if (expected === "object") return "a mapping";
  return /^[aeiou]/.test(expected) ? `an ${expected}` : `a ${expected}`;
}

function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  if (typeof value === "string") return `the string ${JSON.stringify(value.slice(0, 60))}`;
  return `${typeof value} ${String(value)}`;
}

function isReadableFile(path: string): boolean {
  try {
    accessSync(path, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === "" ? undefined : value;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
