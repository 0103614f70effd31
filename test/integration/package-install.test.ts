import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { connect, connectWithConnack, end, Inbox, subscribe } from "../../harness/mqtt-client.js";
import { RedisServer } from "../../harness/redis-server.js";
import { SluiceProcess } from "../../harness/sluice-process.js";

/**
 * Sluice as a user gets it: `npm pack`, installed into an empty folder. The engine's fixes
 * travel inside the package (bundled, already patched), and a node checks them at start.
 */
const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const run = promisify(execFile);

let dir: string;
let app: string;
let cli: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-pack-"));
  // The build under test (dist/) as it is: no prepack rebuild while other tests use it.
  await run("npm", ["pack", "--ignore-scripts", "--pack-destination", dir], { cwd: ROOT });
  const tarball = (await readdir(dir)).find((f) => f.endsWith(".tgz"));
  assert.ok(tarball, "npm pack made a tarball");
  app = join(dir, "app");
  await mkdir(app);
  await writeFile(join(app, "package.json"), '{ "name": "app", "private": true }\n');
  await run("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", join(dir, tarball)], {
    cwd: app,
    maxBuffer: 16 * 1024 * 1024,
  });
  cli = join(app, "node_modules/sluice/dist/src/cli.js");
  await writeFile(
    join(app, "sluice.yaml"),
    "listeners: [{ type: tcp, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: 0 }\n" +
      "auth: { allowAnonymous: true }\nlog: { format: json }\n",
  );
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("the packed package, installed in an empty folder", () => {
  it("starts a node with the engine's fixes in effect and carries QoS 1 end to end", async () => {
    const node = SluiceProcess.spawn(["start", "--config", join(app, "sluice.yaml")], {}, [], cli);
    try {
      const { ports } = await node.ready();
      const url = `mqtt://127.0.0.1:${ports.tcp}`;
      const subscriber = await connect(url);
      const publisher = await connect(url);
      const inbox = new Inbox(subscriber);
      await subscribe(subscriber, "pack/#", 1);
      await publisher.publishAsync("pack/1", "installed", { qos: 1 });
      const [message] = await inbox.waitFor(1);
      assert.equal(message?.payload.toString(), "installed");
      await end(subscriber, publisher);
      node.kill("SIGTERM");
      assert.equal((await node.exited).code, 0);
    } finally {
      node.kill();
    }
  });

  it("runs the Redis persistence from the package (its Lua scripts shipped): a persistent session gets what was queued", async () => {
    const redis = await RedisServer.start();
    const config = join(app, "sluice-redis.yaml");
    await writeFile(
      config,
      `${await readFile(join(app, "sluice.yaml"), "utf8")}redis: { url: "${redis.url}" }\n`,
    );
    const node = SluiceProcess.spawn(["start", "--config", config], {}, [], cli);
    try {
      const { ports } = await node.ready();
      const url = `mqtt://127.0.0.1:${ports.tcp}`;
      const offline = await connect(url, { clientId: "pack-session", clean: false });
      await subscribe(offline, "queued/#", 1);
      await end(offline);
      const publisher = await connect(url);
      await publisher.publishAsync("queued/1", "kept", { qos: 1 });
      await end(publisher);
      const { client, inbox } = await connectWithConnack(url, {
        clientId: "pack-session",
        clean: false,
      });
      const [message] = await inbox.waitFor(1);
      assert.equal(message?.payload.toString(), "kept");
      await end(client);
      node.kill("SIGTERM");
      assert.equal((await node.exited).code, 0);
    } finally {
      node.kill();
      await redis.stop();
    }
  });

  it("refuses to start (exit 1, one line naming it) when an engine fix is missing", async () => {
    const file = join(app, "node_modules/sluice/node_modules/aedes/aedes.js");
    const patched = await readFile(file, "utf8");
    const unpatched = patched.replace(/^.*opts\.closeOnPeerConnect === false.*\n/m, "");
    assert.notEqual(unpatched, patched, "the bundled aedes carries the patch");
    await writeFile(file, unpatched);
    try {
      const child = spawn(process.execPath, [cli, "start", "--config", join(app, "sluice.yaml")]);
      let stderr = "";
      child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
        stderr += chunk;
      });
      const [code] = (await once(child, "exit")) as [number | null];
      assert.equal(code, 1);
      assert.match(stderr, /^sluice: the MQTT engine lacks fixes .*aedes\/aedes\.js lacks 1 of/m);
      assert.equal(stderr.trim().split("\n").length, 1, "one line");
    } finally {
      await writeFile(file, patched);
    }
  });
});
