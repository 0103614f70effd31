import assert from "node:assert/strict";
import { test } from "node:test";
import { connackCode, connectPacket } from "../src/generator/connect-packets.js";
import { splitGroups } from "../src/generator/connection-pool.js";
import { parseCli } from "../src/options.js";
import { renderScenarioTable } from "../src/report/scenario-table.js";
import { aclText } from "../src/scenarios/security-fixtures.js";

test("connectPacket is an MQTT 3.1.1 CONNECT with a clean session and keep-alive 0", () => {
  const packet = connectPacket("c1");
  assert.deepEqual(
    [...packet],
    [0x10, 14, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 0x02, 0, 0, 0, 2, 0x63, 0x31],
  );
});

test("connackCode reads the return code once the 4 bytes are in", () => {
  assert.equal(connackCode(Buffer.from([0x20, 0x02])), undefined);
  assert.equal(connackCode(Buffer.from([0x20, 0x02, 0x00, 0x00])), 0);
  assert.equal(connackCode(Buffer.from([0x20, 0x02, 0x00, 0x03])), 3);
  assert.equal(connackCode(Buffer.from([0x30, 0x02, 0x00, 0x00])), "not-connack");
});

test("splitGroups deals every connection once, with distinct client-id prefixes", () => {
  const groups = splitGroups("mqtt://127.0.0.1:1", 10_001, 3, "x-");
  assert.deepEqual(
    groups.map((g) => g.count),
    [3_334, 3_334, 3_333],
  );
  assert.equal(new Set(groups.map((g) => g.clientIdPrefix)).size, 3);
  assert.equal(splitGroups("mqtt://127.0.0.1:1", 1, 4, "x-").length, 1);
});

test("aclText has the asked number of rules, the allowing one last", () => {
  const lines = aclText(1_000).trim().split("\n");
  assert.equal(lines[0], "user bench");
  assert.equal(lines.length, 1_001);
  assert.equal(lines[lines.length - 1], "topic readwrite bench/#");
});

test("renderScenarioTable right-aligns figures and leaves unmeasured cells empty", () => {
  const markdown = renderScenarioTable({
    title: "t",
    columns: ["broker", "connects/s", "note"],
    rows: [
      { broker: "a|b", "connects/s": 1234, note: null },
      { broker: "c", "connects/s": 1.5, note: true },
    ],
    notes: ["n"],
  });
  assert.equal(
    markdown,
    [
      "### t",
      "",
      "| broker | connects/s | note |",
      "| --- | ---: | --- |",
      "| a\\|b | 1,234 |  |",
      "| c | 1.50 | yes |",
      "",
      "- n",
    ].join("\n"),
  );
});

test("--clients sets N for the connection scenarios", () => {
  assert.equal(parseCli(["storm", "--clients", "2000"], {}).run.clients, 2_000);
  assert.equal(parseCli(["storm"], {}).run.clients, undefined);
});
