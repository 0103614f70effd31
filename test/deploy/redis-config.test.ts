import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { parse } from "yaml";
import { RedisServer } from "../../harness/redis-server.js";
import {
  isEnough,
  pubsubLimit,
  RECOMMENDED_PUBSUB_LIMIT,
} from "../../src/redis/output-buffer-limit.js";
import { byKind, findTool, parseManifests, ROOT, run } from "./deploy-tools.js";

/**
 * The Redis configurations shipped beside Sluice (the Sentinel overlay's redis.conf, the values
 * for Bitnami's chart) set a pubsub output buffer limit that a node accepts, as a real
 * redis-server reads it.
 */
const LIMIT_LINE = /client-output-buffer-limit (pubsub [^"\n]+)/;

/** The pubsub limit a redis-server started with `value` reports (CONFIG GET). */
async function limitRedisReads(value: string): Promise<string> {
  const redis = await RedisServer.start({ args: ["--client-output-buffer-limit", value] });
  try {
    // ["*2", "$26", "client-output-buffer-limit", "$<n>", "<value>"]
    const reply = await redis.reply("CONFIG", "GET", "client-output-buffer-limit");
    return reply[4] ?? "";
  } finally {
    await redis.stop();
  }
}

async function assertAccepted(where: string, text: string): Promise<void> {
  const value = LIMIT_LINE.exec(text)?.[1];
  assert.ok(value, `${where} sets client-output-buffer-limit pubsub`);
  assert.equal(value, RECOMMENDED_PUBSUB_LIMIT, `${where}: the documented value`);
  const limit = pubsubLimit(await limitRedisReads(value));
  assert.ok(limit && isEnough(limit), `${where}: ${value} is enough for a node`);
}

describe("Redis configurations shipped for Sluice", () => {
  test("the Sentinel overlay's Redis pods set the pubsub output buffer limit", async () => {
    const kustomize = await findTool("kustomize");
    const result = await run(kustomize, ["build", join(ROOT, "k8s/overlays/redis-sentinel")]);
    assert.equal(result.code, 0, result.stderr);
    const script = byKind(parseManifests(result.stdout), "ConfigMap").find(
      (c) => c.data?.["configure.sh"],
    );
    await assertAccepted("configure.sh", script?.data?.["configure.sh"] ?? "");
  });

  test("the values for Bitnami's redis chart set it in every pod's redis.conf", async () => {
    const values = parse(readFileSync(join(ROOT, "helm/bitnami-redis-values.yaml"), "utf8")) as {
      commonConfiguration?: string;
    };
    const conf = values.commonConfiguration ?? "";
    // Bitnami's own default is kept.
    assert.match(conf, /^appendonly yes$/m);
    await assertAccepted("helm/bitnami-redis-values.yaml", conf);
  });
});
