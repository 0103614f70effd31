import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createInterface, type Interface } from "node:readline";
import { fileURLToPath } from "node:url";
import { withDeadline } from "./deadline.js";
import { reapOnExit } from "./reaper.js";

/** The venv scripts/provision.sh makes for PyPI's scramp, and the client script run in it. */
const PYTHON = fileURLToPath(new URL("../../.tools/scramp/bin/python", import.meta.url));
const SCRIPT = fileURLToPath(new URL("../../harness/scramp-client.py", import.meta.url));
const DEADLINE_MS = 5_000;

/**
 * An independent SCRAM-SHA-256 client (scramp, from PyPI, in a child process) driven one message
 * at a time: clientFirst(), final(serverFirst), then verified(serverFinal), which resolves
 * true only when scramp checked the server's signature.
 */
export class ScrampClient {
  private readonly lines: AsyncIterator<string>;

  private constructor(
    private readonly child: ChildProcess,
    reader: Interface,
  ) {
    this.lines = reader[Symbol.asyncIterator]();
  }

  static start(username: string, password: string): ScrampClient {
    if (!existsSync(PYTHON)) {
      throw new Error(`${PYTHON} is missing: run scripts/provision.sh (it installs scramp)`);
    }
    const child = spawn(PYTHON, [SCRIPT, username, password], { stdio: ["pipe", "pipe", "pipe"] });
    reapOnExit(child);
    return new ScrampClient(
      child,
      createInterface({ input: child.stdout as NodeJS.ReadableStream }),
    );
  }

  async clientFirst(): Promise<Buffer> {
    return Buffer.from(await this.next("client-first"));
  }

  async final(serverFirst: Buffer): Promise<Buffer> {
    this.child.stdin?.write(`${serverFirst.toString()}\n`);
    return Buffer.from(await this.next("client-final"));
  }

  async verified(serverFinal: Buffer | undefined): Promise<boolean> {
    this.child.stdin?.end(`${serverFinal?.toString() ?? ""}\n`);
    const exited = new Promise<number | null>((resolve) => {
      if (this.child.exitCode !== null) resolve(this.child.exitCode);
      else this.child.once("exit", (code) => resolve(code));
    });
    return (await withDeadline(exited, DEADLINE_MS, "scramp's exit")) === 0;
  }

  /** Ends the child if the test stopped before the exchange did. */
  stop(): void {
    if (this.child.exitCode === null) this.child.kill("SIGKILL");
  }

  private async next(what: string): Promise<string> {
    const line = await withDeadline(this.lines.next(), DEADLINE_MS, `scramp's ${what}`);
    if (line.done) throw new Error(`scramp ended before its ${what}`);
    return line.value;
  }
}
