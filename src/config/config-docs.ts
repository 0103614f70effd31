import { writeFileSync } from "node:fs";
import { stringify } from "yaml";
import { z } from "zod";
import { ENV_OVERRIDES } from "./load-config.js";
import { configSchema } from "./schema.js";

/**
 * Renders docs/configuration.md from the zod schema: every key with its description (from
 * `.describe()`), type, default, bounds, environment variable and an example. The schema is
 * the only source; `npm run docs` writes the file and a test fails when it is out of date.
 */

interface JsonSchema {
  type?: string;
  description?: string;
  default?: unknown;
  examples?: unknown[];
  const?: unknown;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  pattern?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  oneOf?: JsonSchema[];
  anyOf?: JsonSchema[];
}

/** One documented key: a leaf value, or a block (a mapping) that holds keys of its own. */
interface KeyDoc {
  path: string;
  schema: JsonSchema;
  required: boolean;
  block: boolean;
  /** For listener keys: the listener types that have the key, with each one's default. */
  variants?: Array<{ type: string; schema: JsonSchema; required: boolean }>;
}

const ENV_BY_PATH = new Map<string, string>(
  ENV_OVERRIDES.map(({ variable, path }) => [path.join("."), variable]),
);

/** zod's integer bounds when none was given: not worth printing. */
const SAFE_INTEGER = Number.MAX_SAFE_INTEGER;

export const CONFIGURATION_DOCS_PATH = "docs/configuration.md";

export function writeConfigurationDocs(path: string = CONFIGURATION_DOCS_PATH): void {
  writeFileSync(path, renderConfigurationDocs());
}

export function renderConfigurationDocs(): string {
  const root = z.toJSONSchema(configSchema, {
    io: "input",
    unrepresentable: "any",
  }) as JsonSchema;
  const keys = collectKeys(root, "", new Set(root.required ?? []));
  const leaves = keys.filter((key) => !key.block);

  const out: string[] = [HEADER, "## All keys", ""];
  out.push("| key | type | default | environment |", "| --- | --- | --- | --- |");
  for (const key of leaves) {
    out.push(
      `| [\`${key.path}\`](#${anchorOf(key.path)}) | ${cell(typeOf(key.schema))} | ${cell(defaultText(key))} | ${envOf(key.path) ?? ""} |`,
    );
  }
  out.push("");

  for (const key of keys) {
    const topLevel = !key.path.includes(".") && !key.path.includes("[");
    out.push(`${topLevel ? "##" : "###"} \`${key.path}\``, "");
    const description = key.schema.description ?? key.variants?.[0]?.schema.description;
    if (description === undefined) {
      throw new Error(`${key.path}: no description; add .describe() to it in the schema`);
    }
    out.push(description, "");
    out.push(...facts(key), "");
    if (!key.block) out.push("```yaml", exampleOf(key).trimEnd(), "```", "");
  }
  return `${out.join("\n").trimEnd()}\n`;
}

const HEADER = `# Configuration reference

<!-- Generated from src/config/schema.ts by \`npm run docs\`: edit the schema's .describe() texts, not this file. -->

Sluice reads one YAML file (\`sluice start --config FILE\`, or the path in \`SLUICE_CONFIG\`).
Values come from, in increasing precedence: the defaults below, the file, then the \`SLUICE_*\`
environment variables named below. Every key is optional unless marked required; an unknown
key, a value of the wrong type or one out of bounds is refused with one line per problem naming
the key, and the node does not start (exit code 2). Relative file paths resolve against the
config file's folder.

Without a config file a node runs on its embedded default: MQTT on 127.0.0.1:1883, HTTP on
127.0.0.1:9100, in memory, anonymous clients allowed because it listens on loopback only.
With a file, anonymous access is off unless \`auth.allowAnonymous\` turns it on.

\`sluice check-config --config FILE\` validates a file exactly as \`sluice start\` does and
prints the effective configuration, defaults filled in and secrets redacted. It also prints
\`configDir\`, the folder relative paths were resolved against: that is not a key you set.
`;

/** Walks the JSON Schema depth first, in the schema's key order. */
function collectKeys(schema: JsonSchema, prefix: string, required: Set<string>): KeyDoc[] {
  const keys: KeyDoc[] = [];
  for (const [name, child] of Object.entries(schema.properties ?? {})) {
    const path = prefix === "" ? name : `${prefix}.${name}`;
    const isRequired = required.has(name) && child.default === undefined;
    const item = child.type === "array" ? child.items : undefined;
    const variants = item?.oneOf ?? item?.anyOf;
    if (variants !== undefined) {
      keys.push({ path, schema: child, required: isRequired, block: true });
      keys.push(...collectVariantKeys(`${path}[]`, variants));
    } else if (item?.type === "object") {
      keys.push({ path, schema: child, required: isRequired, block: true });
      keys.push(...collectKeys(item, `${path}[]`, new Set(item.required ?? [])));
    } else if (child.type === "object" && child.properties !== undefined) {
      keys.push({ path, schema: child, required: isRequired, block: true });
      keys.push(...collectKeys(child, path, new Set(child.required ?? [])));
    } else {
      keys.push({ path, schema: child, required: isRequired, block: false });
    }
  }
  return keys;
}

/** A list of mappings told apart by `type` (listeners): one entry per key, listing its types. */
function collectVariantKeys(prefix: string, variants: JsonSchema[]): KeyDoc[] {
  const byName = new Map<string, NonNullable<KeyDoc["variants"]>>();
  for (const variant of variants) {
    const type = String(variant.properties?.type?.const);
    const required = new Set(variant.required ?? []);
    for (const [name, child] of Object.entries(variant.properties ?? {})) {
      if (child.type === "object") {
        throw new Error(`${prefix}.${name}: nested blocks in listeners are not rendered`);
      }
      const list = byName.get(name) ?? [];
      list.push({
        type,
        schema: child,
        required: required.has(name) && child.default === undefined,
      });
      byName.set(name, list);
    }
  }
  return [...byName].map(([name, list]) => {
    const first = list[0] as NonNullable<KeyDoc["variants"]>[number];
    const schema: JsonSchema =
      name === "type"
        ? { type: "string", enum: list.map((v) => v.type), description: first.schema.description }
        : first.schema;
    return {
      path: `${prefix}.${name}`,
      schema,
      required: list.every((v) => v.required) || name === "type",
      block: false,
      variants: list,
    };
  });
}

function facts(key: KeyDoc): string[] {
  if (key.block) {
    const lines = [`- Type: ${key.schema.type === "array" ? "list of mappings" : "mapping"}`];
    if (key.required) lines.push("- Required: yes");
    else if (key.schema.default === undefined) lines.push("- Default: absent");
    if (key.schema.minItems !== undefined) lines.push(`- Bounds: at least ${key.schema.minItems}`);
    return lines;
  }
  const lines = [`- Type: ${typeOf(key.schema)}`];
  if (key.required) lines.push("- Required: yes");
  else lines.push(`- Default: ${defaultText(key)}`);
  const bounds = boundsOf(key.schema);
  if (bounds !== undefined) lines.push(`- Bounds: ${bounds}`);
  lines.push(`- Environment: ${envOf(key.path) === undefined ? "none" : envOf(key.path)}`);
  if (key.variants !== undefined && !key.path.endsWith(".type")) {
    lines.push(`- Listener types: ${key.variants.map((v) => `\`${v.type}\``).join(", ")}`);
  }
  return lines;
}

function typeOf(schema: JsonSchema): string {
  if (schema.enum !== undefined) return `one of ${schema.enum.map((v) => `\`${v}\``).join(", ")}`;
  if (schema.const !== undefined) return `\`${String(schema.const)}\``;
  if (schema.type === "array") {
    const item = schema.items === undefined ? "values" : typeOf(schema.items);
    return `list of ${item === "string" ? "strings" : item}`;
  }
  return schema.type ?? "any";
}

function defaultText(key: KeyDoc): string {
  if (key.required) return "required";
  const variants = key.variants;
  if (variants !== undefined && !key.path.endsWith(".type")) {
    const values = variants.map((v) => v.schema.default);
    if (values.some((v) => JSON.stringify(v) !== JSON.stringify(values[0]))) {
      return variants.map((v) => `${v.type}: ${literal(v.schema.default)}`).join(", ");
    }
  }
  return literal(key.schema.default);
}

function literal(value: unknown): string {
  return value === undefined ? "absent" : `\`${JSON.stringify(value)}\``;
}

function boundsOf(schema: JsonSchema): string | undefined {
  if (schema.type === "array") {
    const parts: string[] = [];
    if (schema.minItems !== undefined) parts.push(`at least ${schema.minItems} entries`);
    const itemBounds = schema.items === undefined ? undefined : boundsOf(schema.items);
    if (itemBounds !== undefined) parts.push(`each ${itemBounds}`);
    return parts.length === 0 ? undefined : parts.join("; ");
  }
  const low =
    schema.exclusiveMinimum !== undefined
      ? `greater than ${schema.exclusiveMinimum}`
      : schema.minimum !== undefined && schema.minimum > -SAFE_INTEGER
        ? `at least ${schema.minimum}`
        : undefined;
  const high =
    schema.exclusiveMaximum !== undefined
      ? `less than ${schema.exclusiveMaximum}`
      : schema.maximum !== undefined && schema.maximum < SAFE_INTEGER
        ? `at most ${schema.maximum}`
        : undefined;
  const parts: string[] = [];
  if (
    schema.minimum !== undefined &&
    schema.maximum !== undefined &&
    low?.startsWith("at least") &&
    high?.startsWith("at most")
  ) {
    parts.push(`${schema.minimum} to ${schema.maximum}`);
  } else {
    if (low !== undefined) parts.push(low);
    if (high !== undefined) parts.push(high);
  }
  if (schema.minLength !== undefined && schema.minLength > 0) {
    parts.push(`at least ${schema.minLength} character${schema.minLength === 1 ? "" : "s"}`);
  }
  if (schema.maxLength !== undefined) parts.push(`at most ${schema.maxLength} characters`);
  if (schema.pattern !== undefined) parts.push(`matches \`${schema.pattern}\``);
  return parts.length === 0 ? undefined : parts.join(", ");
}

function envOf(path: string): string | undefined {
  const variable = ENV_BY_PATH.get(path);
  return variable === undefined ? undefined : `\`${variable}\``;
}

/** A YAML snippet setting the key: its example, else its default, nested as in a file. */
function exampleOf(key: KeyDoc): string {
  const value = exampleValue(key);
  const segments = key.path.split(".");
  let node: unknown = value;
  for (let i = segments.length - 1; i >= 0; i--) {
    const segment = segments[i] as string;
    const inList = segment.endsWith("[]");
    const name = inList ? segment.slice(0, -2) : segment;
    if (i === segments.length - 1) {
      node = { [name]: node };
      continue;
    }
    if (inList) {
      const entry =
        key.variants !== undefined && !key.path.endsWith(".type")
          ? { type: key.variants[0]?.type, ...(node as object) }
          : (node as object);
      node = { [name]: [entry] };
    } else {
      node = { [name]: node };
    }
  }
  return stringify(node, { lineWidth: 0 });
}

function exampleValue(key: KeyDoc): unknown {
  const schemas = [key.schema, ...(key.variants ?? []).map((v) => v.schema)];
  for (const schema of schemas) {
    if (schema.examples !== undefined && schema.examples.length > 0) return schema.examples[0];
  }
  for (const schema of schemas) {
    if (schema.default !== undefined) return schema.default;
  }
  if (key.schema.enum !== undefined) return key.schema.enum[0];
  throw new Error(`${key.path}: no default and no example; add .meta({ examples: [...] })`);
}

function cell(text: string): string {
  return text.replaceAll("|", "\\|");
}

/** GitHub's heading anchor: lower case, punctuation other than - and _ dropped, spaces as -. */
export function anchorOf(heading: string): string {
  return heading
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s/g, "-");
}
