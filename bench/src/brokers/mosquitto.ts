import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { freePort } from "../../../harness/free-port.js";
import type { BrokerContext, BrokerDefinition, RunningBroker } from "./broker.js";
import { waitForPort } from "./wait-for-port.js";

export const MOSQUITTO_PATH = process.env.MOSQUITTO_PATH ?? "/usr/sbin/mosquitto";

/**
 * Mosquitto's config for a measurement. Its defaults would throttle QoS 1 where aedes does
 * not: max_inflight_messages 20 per client is lifted (0 = no limit, as aedes has none), and the
 * per-client queue is raised from 1,000 to 1,000,000 messages so nothing is dropped at full
 * speed. No persistence, as the other in-memory brokers.
 */
export function mosquittoConfig(port: number): string {
  return `listener ${port} 127.0.0.1
allow_anonymous true
max_inflight_messages 0
max_queued_messages 1000000
max_queued_bytes 0
persistence false
log_dest stderr
log_type error
log_type warning
`;
}

async function startMosquitto({
  cleanup,
  workDir,
  nodeCpu,
}: BrokerContext): Promise<RunningBroker> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const file = join(workDir, `mosquitto-${port}.conf`);
    await writeFile(file, mosquittoConfig(port));
    const child = spawn(MOSQUITTO_PATH, ["-c", file], { stdio: ["ignore", "ignore", "pipe"] });
    const stopChild = cleanup.addChild("mosquitto", child);
    const pid = child.pid;
    const stop = async (): Promise<void> => {
      await stopChild();
      if (pid) nodeCpu?.release(pid);
    };
    let output = "";
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      output += chunk;
    });
    try {
      if (nodeCpu && pid) nodeCpu.place(pid, "mosquitto");
      await waitForPort(port, () =>
        child.exitCode === null ? undefined : `mosquitto exited: ${output.slice(-500)}`,
      );
      const url = `mqtt://127.0.0.1:${port}`;
      return {
        name: "mosquitto",
        publisherUrls: [url],
        subscriberUrls: [url],
        processes: child.pid ? [{ role: "broker", pid: child.pid }] : [],
        stop,
      };
    } catch (error) {
      lastError = error;
      await stop();
    }
  }
  throw lastError;
}

export const mosquitto: BrokerDefinition = {
  name: "mosquitto",
  description: "Mosquitto (Debian package), the C reference broker",
  start: startMosquitto,
};
