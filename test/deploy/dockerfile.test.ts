import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { ROOT } from "./deploy-tools.js";

/**
 * No Docker engine or Dockerfile linter is installed here: these are the checks that matter
 * for this image, on the Dockerfile's instructions (continuation lines joined).
 */
interface Instruction {
  op: string;
  args: string;
}

function instructions(text: string): Instruction[] {
  return text
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"))
    .map((line) => {
      const [op = "", ...rest] = line.split(/\s+/);
      return { op: op.toUpperCase(), args: rest.join(" ") };
    });
}

const all = instructions(readFileSync(join(ROOT, "Dockerfile"), "utf8"));
const stages: Instruction[][] = [];
for (const instruction of all) {
  if (instruction.op === "FROM") stages.push([]);
  stages.at(-1)?.push(instruction);
}
const runtime = stages.at(-1) ?? [];

test("Dockerfile - multi-stage, on Node 20 or newer", () => {
  assert.ok(stages.length >= 2);
  const base = all.find((i) => i.op === "ARG" && i.args.startsWith("NODE_IMAGE="));
  assert.match(base?.args ?? "", /^NODE_IMAGE=node:(2\d|[3-9]\d)[.-]/);
  for (const from of all.filter((i) => i.op === "FROM"))
    assert.doesNotMatch(from.args, /:latest\b/);
});

test("Dockerfile - every npm ci has the patches copied in before it", () => {
  for (const stage of stages) {
    const ci = stage.findIndex((i) => i.op === "RUN" && /npm ci/.test(i.args));
    if (ci < 0) continue;
    const patches = stage.findIndex((i) => i.op === "COPY" && /\bpatches\b/.test(i.args));
    assert.ok(patches >= 0 && patches < ci, "COPY patches before npm ci");
  }
  const production = all.filter(
    (i) => i.op === "RUN" && /npm ci/.test(i.args) && /--omit=dev/.test(i.args),
  );
  assert.equal(production.length, 1);
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
    dependencies: Record<string, string>;
  };
  assert.ok(pkg.dependencies["patch-package"], "patch-package must be a production dependency");
});

test("Dockerfile - runtime: non-root, sluice start, no HEALTHCHECK, no dev tree", () => {
  const user = runtime.filter((i) => i.op === "USER").at(-1);
  assert.ok(user, "USER in the runtime stage");
  assert.doesNotMatch(user.args, /^(root|0)(:|$)/);
  assert.equal(
    all.find((i) => i.op === "HEALTHCHECK"),
    undefined,
  );
  const entrypoint = runtime.find((i) => i.op === "ENTRYPOINT");
  const cmd = runtime.find((i) => i.op === "CMD");
  const argv = [
    ...(JSON.parse(entrypoint?.args ?? "[]") as string[]),
    ...(JSON.parse(cmd?.args ?? "[]") as string[]),
  ];
  assert.deepEqual(argv, ["node", "/app/dist/src/cli.js", "start"]);
  const env = runtime
    .filter((i) => i.op === "ENV")
    .map((i) => i.args)
    .join(" ");
  assert.match(env, /SLUICE_CONFIG=\/etc\/sluice\/sluice\.yaml/);
  assert.ok(
    runtime.some((i) => i.op === "COPY" && /(^|\s)patches(\s|$)/.test(i.args)),
    "the runtime has the patches its engine check reads",
  );
  for (const copy of runtime.filter((i) => i.op === "COPY"))
    assert.doesNotMatch(copy.args, /(^|\s)(\.|src|test)(\s|$)/, `runtime copies ${copy.args}`);
});

test(".dockerignore - lets in only what the build needs", () => {
  const lines = readFileSync(join(ROOT, ".dockerignore"), "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "" && !l.startsWith("#"));
  assert.equal(lines[0], "*");
  const allowed = lines.slice(1).map((l) => l.replace(/^!/, "").replace(/\/$/, ""));
  assert.deepEqual(allowed.sort(), [
    "package-lock.json",
    "package.json",
    "patches",
    "scripts/copy-lua.mjs",
    "src",
    "tsconfig.json",
  ]);
});
