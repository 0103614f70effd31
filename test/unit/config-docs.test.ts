import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { renderConfigurationDocs } from "../../src/config/config-docs.js";

/** Tests run from dist/test/unit; the repository root is three folders up. */
const DOCS = fileURLToPath(new URL("../../../docs/configuration.md", import.meta.url));

describe("configuration reference", () => {
  it("docs/configuration.md is what `npm run docs` generates from the schema", () => {
    const committed = readFileSync(DOCS, "utf8");
    assert.ok(
      committed === renderConfigurationDocs(),
      "docs/configuration.md is out of date: run `npm run docs` and commit the result",
    );
  });

  it("lists each key with its type, default, bounds and environment variable", () => {
    const docs = renderConfigurationDocs();
    assert.match(
      docs,
      /\| \[`log\.format`\]\(#logformat\) \| one of `auto`, `json`, `pretty` \| `"auto"` \| `SLUICE_LOG_FORMAT` \|/,
    );
    assert.match(
      docs,
      /### `limits\.queue\.maxInflight`\n\n.+\n\n- Type: integer\n- Default: `100`\n- Bounds: 1 to 65535\n/,
    );
  });
});
