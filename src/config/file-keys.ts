import { z } from "zod";

/**
 * How a config key that names a file is used: `read` files must exist when the config is
 * checked; `written` ones (the device registry's JSON file) are created by the node.
 */
export type FileUse = "read" | "written";

/** A key that names a file, as a pattern: `listeners[].cert`, `auth.passwordFile`. */
export interface FileKey {
  pattern: string;
  use: FileUse;
}

/** The schema marks each file key with `.meta({ file })`; this is how it reads in JSON Schema. */
interface JsonSchemaNode {
  file?: FileUse;
  properties?: Record<string, JsonSchemaNode>;
  items?: JsonSchemaNode;
  anyOf?: JsonSchemaNode[];
  oneOf?: JsonSchemaNode[];
  allOf?: JsonSchemaNode[];
}

/** Every key of a schema that names a file: read from the schema, so the list cannot drift. */
export function fileKeysOf(schema: z.ZodType): FileKey[] {
  const keys = new Map<string, FileUse>();
  const walk = (node: JsonSchemaNode, pattern: string): void => {
    if (node.file !== undefined) keys.set(pattern, node.file);
    for (const [name, child] of Object.entries(node.properties ?? {}))
      walk(child, pattern === "" ? name : `${pattern}.${name}`);
    if (node.items) walk(node.items, `${pattern}[]`);
    for (const alternative of [...(node.anyOf ?? []), ...(node.oneOf ?? []), ...(node.allOf ?? [])])
      walk(alternative, pattern);
  };
  walk(z.toJSONSchema(schema, { io: "input", unrepresentable: "any" }) as JsonSchemaNode, "");
  return [...keys].map(([pattern, use]) => ({ pattern, use }));
}

/** One file a config names: its key (`listeners[1].cert`) and its path. */
export interface NamedFile {
  key: string;
  path: string;
  use: FileUse;
}

/**
 * Visits every file a config names, in the order of `keys`; `replace` may return a new path
 * (e.g. resolved against the config's folder), which is written back in place.
 */
export function visitFiles(
  config: object,
  keys: readonly FileKey[],
  replace: (file: NamedFile) => string | undefined = () => undefined,
): NamedFile[] {
  const found: NamedFile[] = [];
  for (const { pattern, use } of keys) {
    const segments = pattern.split(".");
    const visit = (holder: unknown, index: number, key: string): void => {
      if (holder === null || typeof holder !== "object") return;
      const segment = segments[index] as string;
      const array = segment.endsWith("[]");
      const name = array ? segment.slice(0, -2) : segment;
      const record = holder as Record<string, unknown>;
      const value = record[name];
      const at = key === "" ? name : `${key}.${name}`;
      if (array) {
        if (!Array.isArray(value)) return;
        value.forEach((item, i) => {
          visit(item, index + 1, `${at}[${i}]`);
        });
      } else if (index === segments.length - 1) {
        if (typeof value !== "string") return;
        const file = { key: at, path: value, use };
        found.push(file);
        const next = replace(file);
        if (next !== undefined) record[name] = next;
      } else {
        visit(value, index + 1, at);
      }
    };
    visit(config, 0, "");
  }
  return found;
}
