import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { connect } from "node:net";
import { freePort } from "./free-port.js";

/**
 * A real redis-server started for a test on a random loopback port (never 6379, never a server
 * the test did not start), without persistence. `stop()` and `kill()` simulate outages;
 * `start()` again brings it back on the same port, empty, as after a restart with data loss.
 */
export class RedisServer {
  private process: ChildProcess | undefined;

  private constructor(readonly port: number) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts a server on a fresh port, retrying if the port was taken in between. */
  static async start(): Promise<RedisServer> {
    let lastError: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      const server = new RedisServer(await freePort());
      try {
        await server.start();
        return server;
      } catch (error) {
        lastError = error;
      }
    }
    throw lastError;
  }

  /** (Re)starts the server on its port; resolves once it accepts connections. */
  async start(): Promise<void> {
    const child = spawn(
      "redis-server",
      [
        "--port",
        String(this.port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--loglevel",
        "notice",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    this.process = child;
    let output = "";
    await new Promise<void>((resolve, reject) => {
      child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
        output += chunk;
        if (output.includes("Ready to accept connections")) resolve();
      });
      child.once("error", reject);
      child.once("exit", (code) =>
        reject(new Error(`redis-server exited (${code}): ${output.slice(-500)}`)),
      );
    });
  }

  /** Graceful stop (SIGTERM); resolves when the process has exited. */
  async stop(): Promise<void> {
    await this.signal("SIGTERM");
  }

  /** Abrupt stop (SIGKILL), as a crash. */
  async kill(): Promise<void> {
    await this.signal("SIGKILL");
  }

  /** Sends a raw command (RESP) and resolves with the first reply line, e.g. "+PONG". */
  async command(...args: string[]): Promise<string> {
    const reply = await this.roundTrip(args);
    return reply.split("\r\n")[0] ?? "";
  }

  /** Sends a command whose reply is a bulk string (CLIENT LIST, INFO) and resolves with its text. */
  async bulk(...args: string[]): Promise<string> {
    const reply = await this.roundTrip(args);
    const header = /^\$(\d+)\r\n/.exec(reply);
    if (!header) throw new Error(`not a bulk reply: ${reply.slice(0, 200)}`);
    return Buffer.from(reply.slice(header[0].length)).subarray(0, Number(header[1])).toString();
  }

  private async roundTrip(args: string[]): Promise<string> {
    const socket = connect({ port: this.port, host: "127.0.0.1" });
    const request = `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`;
    socket.end(request);
    let reply = "";
    socket.setEncoding("utf8").on("data", (chunk: string) => {
      reply += chunk;
    });
    await once(socket, "close");
    return reply;
  }

  private async signal(signal: NodeJS.Signals): Promise<void> {
    const child = this.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit");
    child.kill(signal);
    await exited;
  }
}
