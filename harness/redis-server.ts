import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { connect } from "node:net";
import { freePort } from "./free-port.js";
import { reapOnExit } from "./reaper.js";

export interface RedisServerOptions {
  /**
   * Runs as a replica of the server on this loopback port, in a working folder of the test's
   * (a replica writes the snapshot it syncs to disk before loading it).
   */
  replicaOf?: { port: number; dir: string };
  /** Runs as a Sentinel with this config file, which must be writable: Sentinel rewrites it. */
  sentinelConfig?: string;
  /** Runs as a Redis Cluster node with this cluster bus port, its node file in `dir`. */
  cluster?: { busPort: number; dir: string };
  /** Serves TLS only (no plain port), asking clients for a certificate from `ca`. */
  tls?: { cert: string; key: string; ca: string };
  /** Extra config directives, one word each: ["--user", "sluice", "on", ">secret", "+@all"]. */
  args?: string[];
  /** Runs inside this network namespace, bound to `host` there (harness/fault-network.ts). */
  netns?: { namespace: string; host: string };
}

/**
 * A real redis-server started for a test on a random loopback port (never 6379, never a server
 * the test did not start), without persistence. `stop()` and `kill()` simulate outages;
 * `start()` again brings it back on the same port, empty, as after a restart with data loss.
 * The same binary runs replicas and Sentinels (`redis-server <config> --sentinel`), for tests
 * of a failover.
 */
/** The name the harness's own CLIENT LIST connection gives itself. */
const PROBE_NAME = "harness-probe";

export class RedisServer {
  private process: ChildProcess | undefined;
  /** The server's log lines since its last start, and tests waiting for one. */
  private output: string[] = [];
  private waiters: Array<{ check: () => void; fail: (error: Error) => void }> = [];

  private constructor(
    readonly port: number,
    private readonly options: RedisServerOptions,
  ) {}

  /** The address it is bound to: loopback, or its address in a fault network. */
  get host(): string {
    return this.options.netns?.host ?? "127.0.0.1";
  }

  get url(): string {
    return `redis://${this.host}:${this.port}`;
  }

  /** Starts a server on a fresh port, retrying if the port was taken in between. */
  static async start(options: RedisServerOptions = {}): Promise<RedisServer> {
    let lastError: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      const server = new RedisServer(await freePort(), options);
      try {
        await server.start();
        return server;
      } catch (error) {
        lastError = error;
      }
    }
    throw lastError;
  }

  /**
   * (Re)starts the server on its port; resolves once it accepts connections, a replica once it
   * has synced with its primary, a Sentinel once it monitors its primary.
   */
  async start(): Promise<void> {
    const { replicaOf, sentinelConfig, cluster, tls } = this.options;
    const network = [
      ...(tls === undefined
        ? ["--port", String(this.port)]
        : ["--port", "0", "--tls-port", String(this.port)]),
      ...["--bind", this.host, "--loglevel", "notice"],
    ];
    const args =
      sentinelConfig === undefined
        ? [...network, "--save", "", "--appendonly", "no"]
        : [sentinelConfig, "--sentinel", ...network];
    if (replicaOf !== undefined) {
      args.push("--replicaof", "127.0.0.1", String(replicaOf.port), "--dir", replicaOf.dir);
      // Without persistence, delete the synced snapshot once loaded.
      args.push("--rdb-del-sync-files", "yes");
    }
    if (cluster !== undefined) {
      args.push("--cluster-enabled", "yes", "--cluster-port", String(cluster.busPort));
      args.push("--cluster-config-file", `nodes-${this.port}.conf`, "--dir", cluster.dir);
      args.push("--cluster-node-timeout", "2000");
    }
    if (tls !== undefined) {
      args.push("--tls-cert-file", tls.cert, "--tls-key-file", tls.key);
      args.push("--tls-ca-cert-file", tls.ca, "--tls-auth-clients", "yes");
    }
    // A fault network's addresses are private to the test: no need for loopback-only mode.
    if (this.options.netns !== undefined) args.push("--protected-mode", "no");
    args.push(...(this.options.args ?? []));
    const ready =
      sentinelConfig !== undefined
        ? /\+monitor master/
        : replicaOf !== undefined
          ? /MASTER <-> REPLICA sync: Finished with success/
          : /Ready to accept connections/;
    const { netns } = this.options;
    const command =
      netns === undefined
        ? ["redis-server"]
        : ["ip", "netns", "exec", netns.namespace, "redis-server"];
    const child = spawn(command[0] as string, [...command.slice(1), ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    reapOnExit(child);
    this.process = child;
    this.output = [];
    let partial = "";
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      partial += chunk;
      const lines = partial.split("\n");
      partial = lines.pop() ?? "";
      this.output.push(...lines);
      for (const waiter of this.waiters) waiter.check();
    });
    // Nothing more will be logged: fail the waiters now rather than at their deadlines.
    child.once("exit", (code, signal) => {
      for (const waiter of this.waiters) {
        waiter.fail(new Error(`redis-server on port ${this.port} exited (${code ?? signal})`));
      }
    });
    try {
      await Promise.race([
        this.waitForOutput(ready, { timeoutMs: 20_000 }),
        once(child, "error").then(([error]) => {
          throw error;
        }),
        once(child, "exit").then(([code]) => {
          throw new Error(`redis-server exited (${code}): ${this.output.slice(-10).join("\n")}`);
        }),
      ]);
    } catch (error) {
      await this.kill();
      throw error;
    }
  }

  /**
   * Resolves with the server's log lines matching `pattern` once there are `count` of them
   * since its last start (past or future); rejects if the server exits first, or after
   * `timeoutMs` with the recent output.
   */
  waitForOutput(
    pattern: RegExp,
    { count = 1, timeoutMs = 20_000 }: { count?: number; timeoutMs?: number } = {},
  ): Promise<string[]> {
    return new Promise((resolve, reject) => {
      const waiter = {
        check: (): void => {
          const found = this.output.filter((line) => pattern.test(line));
          if (found.length < count) return;
          done();
          resolve(found);
        },
        fail: (error: Error): void => {
          done();
          reject(error);
        },
      };
      const timer = setTimeout(() => {
        waiter.fail(
          new Error(
            `port ${this.port}: no ${count} lines matching ${pattern} after ${timeoutMs} ms:\n` +
              this.output.slice(-15).join("\n"),
          ),
        );
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== waiter);
      };
      this.waiters.push(waiter);
      waiter.check();
      const child = this.process;
      if (!child || child.exitCode !== null || child.signalCode !== null) {
        waiter.fail(new Error(`redis-server on port ${this.port} is not running`));
      }
    });
  }

  /** How many of the server's log lines since its last start match `pattern`. */
  countOutput(pattern: RegExp): number {
    return this.output.filter((line) => pattern.test(line)).length;
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
    return (await this.reply(...args))[0] ?? "";
  }

  /** Sends a command whose reply is a bulk string (CLIENT LIST, INFO) and resolves with its text. */
  async bulk(...args: string[]): Promise<string> {
    const reply = await this.roundTrip(args);
    const header = /^\$(\d+)\r\n/.exec(reply);
    if (!header) throw new Error(`not a bulk reply: ${reply.slice(0, 200)}`);
    return Buffer.from(reply.slice(header[0].length)).subarray(0, Number(header[1])).toString();
  }

  /**
   * Sends a raw command (RESP) and resolves with the reply's lines, e.g. for an array of two
   * bulk strings ["*2", "$9", "127.0.0.1", "$4", "6380"].
   */
  async reply(...args: string[]): Promise<string[]> {
    return (await this.roundTrip(args)).split("\r\n").slice(0, -1);
  }

  /**
   * CLIENT LIST without the line of the connection asking: it names itself first (a node's own
   * connections may have CLIENT LIST as their last command too).
   */
  async otherClients(): Promise<string[]> {
    const text = await this.roundTrip(["CLIENT", "SETNAME", PROBE_NAME], ["CLIENT", "LIST"]);
    return text
      .split(/\r?\n/)
      .filter((line) => line.startsWith("id=") && !line.includes(` name=${PROBE_NAME} `));
  }

  private async roundTrip(...commands: string[][]): Promise<string> {
    const socket = connect({ port: this.port, host: this.host });
    const request = commands
      .map(
        (args) =>
          `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`,
      )
      .join("");
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
    // No pid: it never started (spawn failed), and no 'exit' is promised.
    if (!child?.pid || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit");
    child.kill(signal);
    await exited;
  }
}
