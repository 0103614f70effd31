import { existsSync, readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { SluiceError } from "../errors.js";

/** The engine packages Sluice runs on lack fixes it relies on (a patch not applied). */
export class EngineMismatchError extends SluiceError {
  constructor(readonly problems: readonly string[]) {
    super(
      "ENGINE_MISMATCH",
      `the MQTT engine lacks fixes Sluice relies on: ${problems.join("; ")}`,
    );
  }
}

/** The patch-package patches, from dist/src/engine/ (they ship in the package). */
const PATCH_DIR = fileURLToPath(new URL("../../../patches/", import.meta.url));

interface PackagePatch {
  /** e.g. `aedes`, from `aedes+2.0.0-beta.1.patch` */
  name: string;
  version: string;
  /** Per file of the package: the lines the patch adds to it. */
  files: Map<string, string[]>;
}

/**
 * Proves at start that every engine fix is in effect: each patched package is installed at
 * the version its patch was made for, and every line each patch adds is in the file it adds
 * it to. An engine without them would run silently without the fixes (PUBACK before the
 * message is durable, among others), so the node refuses to start instead.
 */
export function verifyEngine(patchDir = PATCH_DIR): void {
  const problems: string[] = [];
  const resolveFrom = createRequire(import.meta.url);
  for (const patch of readPatches(patchDir)) {
    const root = packageRoot(resolveFrom, patch.name);
    if (root === undefined) {
      problems.push(`${patch.name} is not installed`);
      continue;
    }
    const installed = (
      JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
        version: string;
      }
    ).version;
    if (installed !== patch.version) {
      problems.push(`${patch.name} ${installed} is installed, its fixes are for ${patch.version}`);
      continue;
    }
    for (const [file, added] of patch.files) {
      const path = join(root, file);
      const text = existsSync(path) ? readFileSync(path, "utf8") : "";
      const lines = new Set(text.split("\n").map((line) => line.trim()));
      const missing = added.filter((line) => !lines.has(line)).length;
      if (missing > 0)
        problems.push(
          `${patch.name}/${file} lacks ${missing} of the ${added.length} patched lines`,
        );
    }
  }
  if (problems.length > 0) throw new EngineMismatchError(problems);
}

/** Parses `<name>+<version>.patch` files (patch-package's naming, `scope+name` for scopes). */
export function readPatches(patchDir: string): PackagePatch[] {
  return readdirSync(patchDir)
    .filter((file) => file.endsWith(".patch"))
    .map((file) => {
      const [, packageName = "", version = ""] = /^(.+)\+([^+]+)\.patch$/.exec(file) ?? [];
      const name = packageName.replace("+", "/");
      return { name, version, files: addedLines(readFileSync(join(patchDir, file), "utf8"), name) };
    });
}

/** The non-blank lines a unified diff adds, by file path within the package. */
function addedLines(diff: string, name: string): Map<string, string[]> {
  const files = new Map<string, string[]>();
  const prefix = `b/node_modules/${name}/`;
  let current: string[] | undefined;
  for (const line of diff.split("\n")) {
    if (line.startsWith("+++ ")) {
      const target = line.slice(4);
      current = target.startsWith(prefix) ? [] : undefined;
      if (current) files.set(target.slice(prefix.length), current);
    } else if (current && line.startsWith("+") && line.slice(1).trim() !== "") {
      current.push(line.slice(1).trim());
    }
  }
  return files;
}

/** The folder of an installed package, found from its entry point (exports may hide package.json). */
function packageRoot(resolveFrom: NodeJS.Require, name: string): string | undefined {
  let entry: string;
  try {
    entry = resolveFrom.resolve(name);
  } catch {
    return undefined;
  }
  for (let dir = dirname(entry); dir !== dirname(dir); dir = dirname(dir)) {
    const manifest = join(dir, "package.json");
    if (!existsSync(manifest)) continue;
    if ((JSON.parse(readFileSync(manifest, "utf8")) as { name?: string }).name === name) return dir;
  }
  return undefined;
}
