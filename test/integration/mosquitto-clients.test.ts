import assert from "node:assert/strict";
import { type ChildProcessWithoutNullStreams, execFile, spawn } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { createTestPki, secureListener, type TestPki } from "../../harness/certs.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";

/** Interoperability with an independent client implementation: Debian's mosquitto-clients. */
const run = promisify(execFile);

let pki: TestPki;
let running: RunningNode;
let ports: { tcp: number; tls: number };

before(async () => {
  await run("mosquitto_pub", ["--help"]).catch((error: { code?: unknown; stdout?: string }) => {
    // --help exits 1 by design; only a missing binary is a problem.
    if (error.code === "ENOENT")
      throw new Error("mosquitto-clients is not installed (apt-get install mosquitto-clients)");
  });
  pki = await createTestPki({ clientCn: "gateway-3" });
  running = await startNode({
    listeners: [{ type: "tcp", host: "127.0.0.1", port: 0 }, secureListener(pki, "tls", "require")],
  });
  ports = {
    tcp: Number(new URL(running.urls.tcp as string).port),
    tls: Number(new URL(running.urls.tls as string).port),
  };
});
after(async () => {
  await running.stop();
  await pki.cleanup();
});

/** Starts mosquitto_sub for one message; resolves once its SUBACK arrived (seen in -d output). */
async function subscribeOnce(
  args: string[],
): Promise<{ child: ChildProcessWithoutNullStreams; output: Promise<string> }> {
  // stdbuf: mosquitto_sub block-buffers stdout into a pipe, which would hide the SUBACK line.
  const child = spawn("stdbuf", ["-oL", "mosquitto_sub", "-d", "-C", "1", "-v", ...args]);
  let stdout = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout.on("data", () => {
      if (stdout.includes("received SUBACK")) resolve();
    });
    child.once("exit", (code) =>
      reject(new Error(`mosquitto_sub exited (${code}) before SUBACK: ${stdout}`)),
    );
  });
  const output = new Promise<string>((resolve) => child.once("exit", () => resolve(stdout)));
  return { child, output };
}

describe("mosquitto_pub / mosquitto_sub", () => {
  it("exchange a QoS 1 message over TCP", async () => {
    const common = ["-h", "127.0.0.1", "-p", String(ports.tcp), "-q", "1"];
    const { output } = await subscribeOnce([...common, "-t", "plant/+/flow"]);
    await run("mosquitto_pub", [...common, "-t", "plant/pump-1/flow", "-m", "42.7"]);
    assert.match(await output, /^plant\/pump-1\/flow 42\.7$/m);
  });

  it("exchange a QoS 2 message over mutual TLS", async () => {
    const common = [
      "-h",
      "127.0.0.1",
      "-p",
      String(ports.tls),
      "-q",
      "2",
      "--cafile",
      pki.caCert,
      "--cert",
      pki.clientCert,
      "--key",
      pki.clientKey,
    ];
    const { output } = await subscribeOnce([...common, "-t", "secure/#"]);
    await run("mosquitto_pub", [...common, "-t", "secure/valve-2", "-m", "closed"]);
    assert.match(await output, /^secure\/valve-2 closed$/m);
  });

  it("MQTT 5 (-V mqttv5): user properties, content type and expiry cross from mosquitto_pub to mosquitto_sub", async () => {
    const common = ["-h", "127.0.0.1", "-p", String(ports.tcp), "-q", "1", "-V", "mqttv5"];
    const { output } = await subscribeOnce([...common, "-t", "v5/+/state", "-F", "%t|%p|%P|%C|%E"]);
    await run("mosquitto_pub", [
      ...common,
      "-t",
      "v5/pump-4/state",
      "-m",
      "running",
      "-D",
      "publish",
      "user-property",
      "site",
      "plant-7",
      "-D",
      "publish",
      "content-type",
      "text/plain",
      "-D",
      "publish",
      "message-expiry-interval",
      "300",
    ]);
    const line = (await output).split("\n").find((l) => l.startsWith("v5/pump-4/state|"));
    assert.ok(line, await output);
    const [topic, payload, userProperty, contentType, expiry] = line.split("|");
    assert.equal(topic, "v5/pump-4/state");
    assert.equal(payload, "running");
    assert.equal(userProperty, "site:plant-7");
    assert.equal(contentType, "text/plain");
    // The remaining interval is forwarded [MQTT-3.3.2-6]: at most what was sent.
    const remaining = Number(expiry);
    assert.ok(remaining > 290 && remaining <= 300, `message expiry ${expiry}`);
  });

  it("mosquitto_pub without a client certificate is refused on the mTLS listener", async () => {
    await assert.rejects(
      run("mosquitto_pub", [
        "-h",
        "127.0.0.1",
        "-p",
        String(ports.tls),
        "--cafile",
        pki.caCert,
        "-t",
        "x",
        "-m",
        "y",
      ]),
    );
  });
});
