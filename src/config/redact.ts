import type { SluiceConfig } from "./schema.js";

const REDACTED = "[redacted]";
const SECRET_KEYS = new Set(["passphrase", "password", "sentinelPassword", "tokens"]);

/** A copy of the config safe to print or log: secrets and URL credentials replaced. */
export function redactConfig(config: SluiceConfig): unknown {
  return redact(config);
}

function redact(value: unknown, key?: string): unknown {
  if (key !== undefined && SECRET_KEYS.has(key) && value !== undefined) return REDACTED;
  if (key === "url" && typeof value === "string") return redactUrl(value);
  if (Array.isArray(value)) return value.map((item) => redact(item));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redact(v, k)]));
  }
  return value;
}

function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = REDACTED;
    return parsed.toString();
  } catch {
    return REDACTED;
  }
}
