import assert from "node:assert/strict";
import { copyFile, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { EngineMismatchError, readPatches, verifyEngine } from "../../src/engine/engine-check.js";

const PATCHES = fileURLToPath(new URL("../../../patches/", import.meta.url));

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-engine-check-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A patch folder holding one patch-package patch with this name and body. */
async function patchFolder(name: string, body: string): Promise<string> {
  const folder = await mkdtemp(join(dir, "patches-"));
  await writeFile(join(folder, name), body);
  return folder;
}

const ADDS = (line: string) =>
  [
    "diff --git a/node_modules/aedes/lib/write.js b/node_modules/aedes/lib/write.js",
    "--- a/node_modules/aedes/lib/write.js",
    "+++ b/node_modules/aedes/lib/write.js",
    "@@ -1,1 +1,2 @@",
    ` ${"'use strict'"}`,
    `+${line}`,
    "",
  ].join("\n");

describe("engine check", () => {
  it("passes on this checkout's installed, patched engine", () => {
    assert.doesNotThrow(() => verifyEngine());
    const names = readPatches(PATCHES).map((p) => p.name);
    assert.ok(names.includes("aedes"), "the aedes patch is read");
  });

  it("names a file that lacks a patched line", async () => {
    const folder = await patchFolder(
      "aedes+2.0.0-beta.1.patch",
      ADDS("// a fix that is not there"),
    );
    assert.throws(
      () => verifyEngine(folder),
      (error: unknown) =>
        error instanceof EngineMismatchError &&
        /aedes\/lib\/write\.js lacks 1 of the 1 patched lines/.test(error.message),
    );
  });

  it("names a version other than the one the patch is for", async () => {
    const folder = await patchFolder("aedes+9.9.9.patch", ADDS("// anything"));
    assert.throws(
      () => verifyEngine(folder),
      /aedes 2\.0\.0-beta\.1 is installed, its fixes are for 9\.9\.9/,
    );
  });

  it("names a patched package that is not installed", async () => {
    const folder = await patchFolder("no-such-engine+1.0.0.patch", ADDS("// anything"));
    assert.throws(() => verifyEngine(folder), /no-such-engine is not installed/);
  });

  it("reads every shipped patch with at least one added line per file", async () => {
    const files = (await readdir(PATCHES)).filter((f) => f.endsWith(".patch"));
    const patches = readPatches(PATCHES);
    assert.equal(patches.length, files.length);
    for (const patch of patches) {
      assert.ok(patch.files.size > 0, `${patch.name}: no file read`);
      for (const [file, lines] of patch.files) assert.ok(lines.length > 0, `${patch.name}/${file}`);
    }
    // A copy of a real patch, still applied: the check is about content, not file names.
    const copy = await mkdtemp(join(dir, "copy-"));
    await copyFile(
      join(PATCHES, "aedes+2.0.0-beta.1.patch"),
      join(copy, "aedes+2.0.0-beta.1.patch"),
    );
    assert.doesNotThrow(() => verifyEngine(copy));
  });
});
