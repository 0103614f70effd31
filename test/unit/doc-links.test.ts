import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { anchorOf } from "../../src/config/config-docs.js";

/** Tests run from dist/test/unit; the repository root is three folders up. */
const ROOT = fileURLToPath(new URL("../../../", import.meta.url));

function documents(): string[] {
  const docs = join(ROOT, "docs");
  return [
    join(ROOT, "README.md"),
    join(ROOT, "CONTRIBUTING.md"),
    ...readdirSync(docs)
      .filter((name) => name.endsWith(".md"))
      .map((name) => join(docs, name)),
  ];
}

/** The text outside fenced code blocks, where links and headings count. */
function prose(markdown: string): string[] {
  const lines: string[] = [];
  let fenced = false;
  for (const line of markdown.split("\n")) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    else if (!fenced) lines.push(line);
  }
  return lines;
}

/** Link and image targets, with inline code spans removed so `a](b` inside code is no link. */
function linkTargets(markdown: string): string[] {
  const targets: string[] = [];
  for (const line of prose(markdown)) {
    for (const match of line.replace(/`[^`]*`/g, "").matchAll(/\]\(([^)\s]+)\)/g)) {
      targets.push(match[1] as string);
    }
  }
  return targets;
}

/** GitHub's anchors of a document's headings; repeats get -1, -2, ... */
function anchorsOf(file: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  for (const line of prose(readFileSync(file, "utf8"))) {
    const heading = /^#{1,6}\s+(.*)$/.exec(line)?.[1];
    if (heading === undefined) continue;
    const base = anchorOf(heading.replace(/`/g, "").trim());
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    anchors.add(count === 0 ? base : `${base}-${count}`);
  }
  return anchors;
}

function brokenLinks(file: string): string[] {
  const broken: string[] = [];
  for (const target of linkTargets(readFileSync(file, "utf8"))) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto: ...
    const [path = "", anchor] = target.split("#", 2);
    const resolved = path === "" ? file : resolve(dirname(file), decodeURIComponent(path));
    if (!existsSync(resolved)) {
      broken.push(`${target}: no such file`);
      continue;
    }
    if (anchor !== undefined && anchor !== "") {
      if (!resolved.endsWith(".md") || statSync(resolved).isDirectory()) {
        broken.push(`${target}: anchor into a file that is not Markdown`);
      } else if (!anchorsOf(resolved).has(anchor)) {
        broken.push(`${target}: no heading with that anchor`);
      }
    }
  }
  return broken;
}

describe("documentation links", () => {
  for (const file of documents()) {
    it(`every relative link in ${relative(ROOT, file)} resolves`, () => {
      assert.deepEqual(brokenLinks(file), []);
    });
  }

  it("finds a broken link and a broken anchor", () => {
    const file = join(ROOT, "docs", "security.md");
    assert.ok(anchorsOf(file).has("3-brute-force-lockout"));
    assert.ok(!anchorsOf(file).has("no-such-heading"));
    assert.deepEqual(linkTargets("see [x](a.md#b) and `[y](c.md)`\n```\n[z](d.md)\n```\n"), [
      "a.md#b",
    ]);
  });
});
