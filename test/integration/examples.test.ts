import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { connect, end, Inbox, type MqttClient, subscribe } from "../../harness/mqtt-client.js";
import { runCli, SluiceProcess } from "../../harness/sluice-process.js";

/** The README's path for a newcomer: examples/make-dev-certs.sh, then examples/sluice.yaml. */
const run = promisify(execFile);
const EXAMPLES = fileURLToPath(new URL("../../../examples/", import.meta.url));

let dir: string;
let configFile: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-example-"));
  await run("bash", [join(EXAMPLES, "make-dev-certs.sh"), join(dir, "certs")]);
  // The example as shipped, but on free ports: tests never take the standard ones.
  const example = readFileSync(join(EXAMPLES, "sluice.yaml"), "utf8").replace(
    /port: \d+/g,
    "port: 0",
  );
  configFile = join(dir, "sluice.yaml");
  await writeFile(configFile, example);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("examples/sluice.yaml with examples/make-dev-certs.sh", () => {
  it("passes check-config", async () => {
    const { code, stderr } = await runCli(["check-config", "--config", configFile]);
    assert.equal(code, 0, stderr);
  });

  it("serves all four transports, and messages cross between them", async () => {
    const node = SluiceProcess.spawn(["start", "--config", configFile]);
    const clients: MqttClient[] = [];
    try {
      const { ports } = await node.ready();
      const ca = readFileSync(join(dir, "certs", "ca.crt"));
      const urls = {
        tcp: `mqtt://127.0.0.1:${ports.tcp}`,
        tls: `mqtts://127.0.0.1:${ports.tls}`,
        ws: `ws://127.0.0.1:${ports.ws}/mqtt`,
        wss: `wss://127.0.0.1:${ports.wss}/mqtt`,
      };
      const subscribers = new Map<string, Inbox>();
      for (const [transport, url] of Object.entries(urls)) {
        const client = await connect(url, { ca });
        clients.push(client);
        subscribers.set(transport, new Inbox(client));
        await subscribe(client, "example/#", 1);
      }
      const tlsClient = await connect(urls.tls, {
        ca,
        cert: readFileSync(join(dir, "certs", "client.crt")),
        key: readFileSync(join(dir, "certs", "client.key")),
      });
      clients.push(tlsClient);
      await tlsClient.publishAsync("example/from-mtls", "hello", { qos: 1 });
      for (const [transport, inbox] of subscribers) {
        const [message] = await inbox.waitFor(1);
        assert.equal(message?.payload.toString(), "hello", `received over ${transport}`);
      }
    } finally {
      await end(...clients);
      node.kill("SIGTERM");
      await node.exited;
    }
  });
});
