import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./free-port.js";
import { reapOnExit } from "./reaper.js";

export interface Backend {
  name: string;
  mqttPort: number;
  /** The node's HTTP port: HAProxy sends new connections only to nodes whose /readyz is 200. */
  httpPort: number;
  /** The node's address: loopback unless it runs in a fault network's namespace. */
  host?: string;
}

/**
 * A real HAProxy in TCP mode in front of Sluice nodes, as the cluster tests' load balancer:
 * round robin, health checks on /readyz every 250 ms, a dead node out after two failures.
 */
export class HaProxy {
  private constructor(
    readonly port: number,
    private readonly process: ChildProcess,
    private readonly dir: string,
  ) {}

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  /** `sendProxyV2` opens each connection to a node with a PROXY protocol v2 header. */
  static async start(
    backends: readonly Backend[],
    options: { sendProxyV2?: boolean } = {},
  ): Promise<HaProxy> {
    const dir = await mkdtemp(join(tmpdir(), "sluice-haproxy-"));
    const port = await freePort();
    const proxyHeader = options.sendProxyV2 ? " send-proxy-v2" : "";
    const servers = backends
      .map(
        (b) =>
          `  server ${b.name} ${b.host ?? "127.0.0.1"}:${b.mqttPort} check port ${b.httpPort}${proxyHeader}`,
      )
      .join("\n");
    const config = `global
  maxconn 8000
defaults
  mode tcp
  timeout connect 2s
  timeout client 120s
  timeout server 120s
  retries 3
  option redispatch
frontend mqtt
  bind 127.0.0.1:${port}
  default_backend nodes
backend nodes
  balance roundrobin
  option httpchk GET /readyz
  default-server inter 250ms fall 2 rise 1 on-marked-down shutdown-sessions
${servers}
`;
    const file = join(dir, "haproxy.cfg");
    await writeFile(file, config);
    const child = spawn("haproxy", ["-db", "-f", file], { stdio: ["ignore", "pipe", "pipe"] });
    reapOnExit(child);
    let output = "";
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      output += chunk;
    });
    const proxy = new HaProxy(port, child, dir);
    await proxy.waitForPort(() => output);
    return proxy;
  }

  async stop(): Promise<void> {
    if (this.process.exitCode === null && this.process.signalCode === null) {
      const exited = once(this.process, "exit");
      this.process.kill("SIGTERM");
      await exited;
    }
    await rm(this.dir, { recursive: true, force: true });
  }

  /** HAProxy logs nothing on start in -db mode: poll the frontend port (bounded). */
  private async waitForPort(output: () => string): Promise<void> {
    for (let attempt = 0; attempt < 100; attempt++) {
      if (this.process.exitCode !== null) throw new Error(`haproxy exited: ${output()}`);
      const open = await new Promise<boolean>((resolve) => {
        const socket = connect({ port: this.port, host: "127.0.0.1" });
        socket.once("connect", () => {
          socket.destroy();
          resolve(true);
        });
        socket.once("error", () => resolve(false));
      });
      if (open) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`haproxy did not open port ${this.port}: ${output()}`);
  }
}
