import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { type CleanupRegistry, withTimeout } from "../lifecycle/cleanup-registry.js";
import type {
  AttackerCommand,
  AttackerMessage,
  AttackPlan,
  AttackReport,
} from "./flood-attacker.js";

const ATTACKER = fileURLToPath(new URL("./flood-attacker.js", import.meta.url));
const SETUP_TIMEOUT_MS = 15_000;

/**
 * The flood scenario's attacker process (flood-attacker.ts), seen from the coordinator:
 * connected and idle after `start`, attacking for a while after `begin`, its figures from
 * `report`, and gone after `stop` (its sockets reset, so the broker drops what it has not read).
 */
export class FloodAttack {
  private readonly inbox: AttackerMessage[] = [];
  private waiters: Array<() => void> = [];
  private failure: string | undefined;

  private constructor(
    private readonly child: ChildProcess,
    readonly stop: () => Promise<void>,
  ) {
    child.on("message", (message: AttackerMessage) => {
      if (message.type === "failed") this.failure ??= message.error;
      else this.inbox.push(message);
      this.wake();
    });
    child.on("exit", (code, signal) => {
      this.failure ??= `attacker process exited (${code ?? signal})`;
      this.wake();
    });
  }

  /** Forks the attacker and connects its flooding clients and its subscriber. */
  static async start(cleanup: CleanupRegistry, plan: AttackPlan): Promise<FloodAttack> {
    const child = fork(ATTACKER, [], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    const attack = new FloodAttack(child, cleanup.addChild("flood attacker", child, 1_000));
    try {
      attack.send({ type: "setup", plan });
      await withTimeout(attack.next("ready"), SETUP_TIMEOUT_MS, "attacker setup");
      return attack;
    } catch (error) {
      await attack.stop();
      throw error;
    }
  }

  /** Attacks for `durationMs`, starting `delayMs` from now. */
  begin(delayMs: number, durationMs: number): void {
    this.send({ type: "start", delayMs, durationMs });
  }

  /** What the attack achieved, once it is over (bounded by `timeoutMs`). */
  async report(timeoutMs: number): Promise<AttackReport> {
    const message = await withTimeout(this.next("report"), timeoutMs, "attacker report");
    return message.report;
  }

  /** Ends the attacker: its sockets are reset, its process exits. */
  async end(): Promise<void> {
    this.send({ type: "exit" });
    await this.stop();
  }

  private send(command: AttackerCommand): void {
    // A callback, so that a write to a process already going (EPIPE) is not an 'error' event
    // nobody listens to; its exit says it is gone.
    if (this.child.connected) this.child.send(command, () => {});
  }

  private wake(): void {
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  private async next<T extends AttackerMessage["type"]>(
    type: T,
  ): Promise<Extract<AttackerMessage, { type: T }>> {
    for (;;) {
      const index = this.inbox.findIndex((m) => m.type === type);
      if (index >= 0)
        return this.inbox.splice(index, 1)[0] as Extract<AttackerMessage, { type: T }>;
      if (this.failure) throw new Error(this.failure);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }
}
