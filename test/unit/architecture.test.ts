import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

/** The repository root (tests run from dist/test/unit). */
const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const SRC = join(ROOT, "src");

function sourceFiles(folder: string): string[] {
  return readdirSync(folder, { withFileTypes: true }).flatMap((entry) => {
    const path = join(folder, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith(".ts") ? [path] : [];
  });
}

/** Relative imports of a TypeScript file, resolved to source paths. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, "utf8");
  return [...text.matchAll(/from "(\.{1,2}\/[^"]+)"/g)].map((m) =>
    resolve(dirname(file), (m[1] as string).replace(/\.js$/, ".ts")),
  );
}

/** A file's unit: its folder under src/, or the file itself at the top of src/. */
function unitOf(file: string): string {
  const parts = relative(SRC, file).split(sep);
  return parts.length > 1 ? `${parts[0]}/` : (parts[0] as string);
}

/** unit -> unit -> one import that makes the edge, for the failure message. */
function unitGraph(files: readonly string[]): Map<string, Map<string, string>> {
  const graph = new Map<string, Map<string, string>>();
  for (const file of files) {
    const from = unitOf(file);
    for (const target of importsOf(file)) {
      const to = unitOf(target);
      if (to === from) continue;
      const edges = graph.get(from) ?? new Map<string, string>();
      graph.set(from, edges);
      if (!edges.has(to)) edges.set(to, `${relative(SRC, file)} imports ${relative(SRC, target)}`);
    }
  }
  return graph;
}

/** The first cycle found between units, as the imports that close it; undefined when none. */
export function findCycle(graph: Map<string, Map<string, string>>): string[] | undefined {
  const state = new Map<string, "visiting" | "done">();
  const stack: string[] = [];
  const visit = (unit: string): string[] | undefined => {
    state.set(unit, "visiting");
    stack.push(unit);
    for (const [next, why] of graph.get(unit) ?? []) {
      if (state.get(next) === "visiting") {
        const cycle = stack.slice(stack.indexOf(next));
        return [...cycle.map((u, i) => graph.get(u)?.get(cycle[i + 1] ?? next) ?? u), why].slice(
          0,
          cycle.length,
        );
      }
      if (state.get(next) === undefined) {
        const found = visit(next);
        if (found) return found;
      }
    }
    stack.pop();
    state.set(unit, "done");
    return undefined;
  };
  for (const unit of graph.keys()) {
    if (state.get(unit) === undefined) {
      const found = visit(unit);
      if (found) return found;
    }
  }
  return undefined;
}

describe("architecture", () => {
  it("the folders of src/ import each other without cycles", () => {
    const cycle = findCycle(unitGraph(sourceFiles(SRC)));
    assert.equal(cycle, undefined, `import cycle:\n  ${cycle?.join("\n  ")}`);
  });

  it("only src/engine/ reaches into aedes', mqtt-packet's and sockets' internals", () => {
    const internals =
      /\._(parser|handle|newPacket|parse[A-Z]\w*|emitError|released|messageQueue)\b|from "mqtt-packet"/;
    const offenders = sourceFiles(SRC)
      .filter((file) => !relative(SRC, file).startsWith(`engine${sep}`))
      .filter((file) =>
        internals.test(readFileSync(file, "utf8").replace(/^\s*(\/\/|\*).*$/gm, "")),
      );
    assert.deepEqual(
      offenders.map((file) => relative(SRC, file)),
      [],
    );
  });

  // A bound keeps the patch a last resort: each hunk has its reason in docs/architecture.md.
  it("what stays patched is aedes' alone, in at most 610 lines", () => {
    const patches = readdirSync(join(ROOT, "patches"));
    assert.deepEqual(patches, ["aedes+2.0.0-beta.1.patch"]);
    const lines = readFileSync(join(ROOT, "patches", "aedes+2.0.0-beta.1.patch"), "utf8").split(
      "\n",
    );
    assert.ok(lines.length - 1 <= 610, `${lines.length - 1} lines`);
  });

  it("node.ts, the composition root, stays within 250 lines", () => {
    const lines = readFileSync(join(SRC, "node.ts"), "utf8").split("\n").length - 1;
    assert.ok(lines <= 250, `${lines} lines`);
  });

  it("the benchmark does not import the tests (both use harness/)", () => {
    const offenders = sourceFiles(join(ROOT, "bench")).filter((file) =>
      importsOf(file).some((target) => relative(ROOT, target).startsWith(`test${sep}`)),
    );
    assert.deepEqual(
      offenders.map((file) => relative(ROOT, file)),
      [],
    );
  });

  it("the cycle check finds a cycle", () => {
    const graph = new Map([
      ["a/", new Map([["b/", "a/x.ts imports b/y.ts"]])],
      ["b/", new Map([["a/", "b/y.ts imports a/z.ts"]])],
    ]);
    assert.deepEqual(findCycle(graph), ["a/x.ts imports b/y.ts", "b/y.ts imports a/z.ts"]);
  });
});
