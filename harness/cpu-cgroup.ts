import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";

/** The cgroup v1 cpu controller's mount (the CFS bandwidth files live there). */
export const CPU_CONTROLLER = "/sys/fs/cgroup/cpu";
/** Every cgroup the bench makes is named `<prefix><owner pid>-<label>`: its own, and sweepable. */
export const BENCH_CGROUP_PREFIX = "sluice-bench-";
/** The CFS period the quota is a share of (the kernel's default, 100 ms). */
export const CFS_PERIOD_US = 100_000;
/**
 * The weight of a node's cgroup against everything else on the machine (1024 = one ordinary
 * process): high, so that a node gets its quota on a machine others keep busy; the quota caps
 * what that weight can take.
 */
export const NODE_CPU_SHARES = 8_192;
/**
 * The nice value the bench (and so Redis and the generators it spawns) runs at under
 * `--node-cpu`: weight 9548 against an ordinary process' 1024, so that the machine's other work
 * neither starves them nor stretches every Redis round trip by a scheduling delay.
 */
export const BENCH_NICE = -10;
/** The kernel refuses a quota under 1 ms. */
const MIN_QUOTA_US = 1_000;

/** The `--node-cpu` value: cores per broker node, from 0.01 up to the machine's cores. */
export function parseNodeCpu(text: string, machineCores: number): number {
  const cores = Number(text);
  if (text.trim() === "" || !Number.isFinite(cores) || cores <= 0)
    throw new Error(`--node-cpu must be a number of cores, as 0.4 (got "${text}")`);
  if (Math.round(cores * CFS_PERIOD_US) < MIN_QUOTA_US)
    throw new Error(`--node-cpu ${text}: at least 0.01 core (the kernel's 1 ms per 100 ms)`);
  if (cores > machineCores)
    throw new Error(`--node-cpu ${text}: more than the machine's ${machineCores} cores`);
  return cores;
}

/**
 * Throws, saying what is missing, unless `root` is a cgroup v1 cpu controller with CFS
 * bandwidth control this process may create cgroups in (root, or a delegated hierarchy).
 */
export function checkCpuController(root: string = CPU_CONTROLLER): void {
  const needs = "a CPU quota (the bench's --node-cpu) needs a writable cgroup v1 cpu controller";
  if (!existsSync(join(root, "cgroup.procs")))
    throw new Error(`${needs}: no cgroup hierarchy at ${root}`);
  if (!existsSync(join(root, "cpu.cfs_quota_us")))
    throw new Error(
      `${needs}: ${root} has no cpu.cfs_quota_us (no cpu controller or no CFS bandwidth control)`,
    );
  try {
    accessSync(root, constants.W_OK);
  } catch {
    throw new Error(`${needs}: ${root} is not writable by this user (run as root)`);
  }
  const probe = join(root, `${BENCH_CGROUP_PREFIX}${process.pid}-probe`);
  try {
    mkdirSync(probe);
    writeFileSync(join(probe, "cpu.cfs_quota_us"), String(CFS_PERIOD_US));
  } catch (error) {
    throw new Error(
      `${needs}: creating a cgroup under ${root} failed: ${(error as Error).message}`,
    );
  } finally {
    if (existsSync(probe)) rmdirSync(probe);
  }
}

/** What the kernel's cpu.stat says: CFS periods, those the group was throttled in, and for how long. */
export interface ThrottleStats {
  periods: number;
  throttled: number;
  throttledSeconds: number;
}

export function throttleSince(before: ThrottleStats, after: ThrottleStats): ThrottleStats {
  return {
    periods: after.periods - before.periods,
    throttled: after.throttled - before.throttled,
    throttledSeconds: after.throttledSeconds - before.throttledSeconds,
  };
}

/** One broker node's cgroup: its own CFS quota, removed when the node stops or the run ends. */
export class NodeCgroup {
  private removed = false;

  constructor(
    readonly path: string,
    readonly quotaCores: number,
    private readonly root: string,
  ) {}

  /** Moves a whole process (every thread; its future children follow) into this cgroup. */
  add(pid: number): void {
    writeFileSync(join(this.path, "cgroup.procs"), String(pid));
  }

  /** The process ids in the cgroup now. */
  pids(): number[] {
    return readPids(this.path);
  }

  /** cpu.stat now; undefined once the cgroup is gone. */
  stats(): ThrottleStats | undefined {
    try {
      return parseCpuStat(readFileSync(join(this.path, "cpu.stat"), "utf8"));
    } catch {
      return undefined;
    }
  }

  /**
   * Moves what still runs in it back to the hierarchy's root (unconstrained) and removes it;
   * false if the kernel still holds it (a task that is exiting), left to the next run's sweep.
   */
  remove(): boolean {
    if (this.removed) return true;
    this.removed = removeCgroup(this.path, this.root);
    return this.removed;
  }
}

/**
 * The bench's per-node CPU budget (`--node-cpu`): each broker node process it places gets a
 * cgroup of its own with a quota of `cores`, so one node and each of two nodes have the same
 * CPU whatever else runs; Redis and the load generators stay outside.
 */
export class NodeCpuBudget {
  private readonly groups = new Map<number, NodeCgroup>();
  private sequence = 0;

  constructor(
    readonly cores: number,
    readonly root: string = CPU_CONTROLLER,
    private readonly owner: number = process.pid,
  ) {}

  get quotaUs(): number {
    return Math.round(this.cores * CFS_PERIOD_US);
  }

  /** What the results record about the budget. */
  describe(): {
    cores: number;
    quotaUs: number;
    periodUs: number;
    shares: number;
    benchNice: number;
    controller: string;
  } {
    return {
      cores: this.cores,
      quotaUs: this.quotaUs,
      periodUs: CFS_PERIOD_US,
      shares: NODE_CPU_SHARES,
      benchNice: BENCH_NICE,
      controller: this.root,
    };
  }

  /** A new cgroup with the quota, holding `pid` (call right after spawning it). */
  place(pid: number, label: string): NodeCgroup {
    this.sequence++;
    const name = `${BENCH_CGROUP_PREFIX}${this.owner}-${this.sequence}-${label.replace(/[^A-Za-z0-9_.-]/g, "_")}`;
    const path = join(this.root, name);
    mkdirSync(path);
    const group = new NodeCgroup(path, this.cores, this.root);
    try {
      writeFileSync(join(path, "cpu.cfs_period_us"), String(CFS_PERIOD_US));
      writeFileSync(join(path, "cpu.cfs_quota_us"), String(this.quotaUs));
      writeFileSync(join(path, "cpu.shares"), String(NODE_CPU_SHARES));
      group.add(pid);
    } catch (error) {
      group.remove();
      throw error;
    }
    this.groups.set(pid, group);
    return group;
  }

  /** The cgroup a placed process got, if any. */
  cgroupOf(pid: number): NodeCgroup | undefined {
    return this.groups.get(pid);
  }

  /** Removes the cgroup of a process (after it stopped); true if gone. */
  release(pid: number): boolean {
    const group = this.groups.get(pid);
    if (!group) return true;
    const gone = group.remove();
    if (gone) this.groups.delete(pid);
    return gone;
  }

  /** Removes every cgroup still held (synchronous: also from the process' 'exit' event). */
  releaseAll(): void {
    for (const pid of [...this.groups.keys()]) this.release(pid);
  }
}

/**
 * Removes the bench cgroups under `root` whose owning bench process is gone (a run that was
 * killed before it could clean up), children first; their tasks go back to the root. Returns
 * the names removed; those the kernel still holds are left.
 */
export function sweepStaleCgroups(
  root: string = CPU_CONTROLLER,
  isAlive: (pid: number) => boolean = processAlive,
): string[] {
  const swept: string[] = [];
  const pattern = new RegExp(`^${BENCH_CGROUP_PREFIX}(\\d+)-`);
  for (const name of readdirSync(root)) {
    const owner = pattern.exec(name)?.[1];
    if (owner === undefined || isAlive(Number(owner))) continue;
    if (removeTree(join(root, name), root)) swept.push(name);
  }
  return swept;
}

function removeTree(path: string, root: string): boolean {
  for (const entry of readdirSync(path)) {
    const child = join(path, entry);
    if (statSync(child).isDirectory()) removeTree(child, root);
  }
  return removeCgroup(path, root);
}

/** How long a removal waits for tasks that are exiting (SIGKILLed a moment ago) to leave. */
const EXITING_TASKS_WAIT_MS = 1_000;

function removeCgroup(path: string, root: string): boolean {
  const deadline = performance.now() + EXITING_TASKS_WAIT_MS;
  for (;;) {
    if (!existsSync(path)) return true;
    for (const pid of readPids(path)) {
      try {
        writeFileSync(join(root, "cgroup.procs"), String(pid));
      } catch {
        // exiting: it leaves by itself
      }
    }
    try {
      rmdirSync(path);
      return true;
    } catch (error) {
      const busy = (error as NodeJS.ErrnoException).code === "EBUSY";
      if (!busy || performance.now() > deadline) return false;
      // synchronous (it also runs from the 'exit' event): a task being killed is gone in ms
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
    }
  }
}

function readPids(path: string): number[] {
  try {
    return readFileSync(join(path, "cgroup.procs"), "utf8")
      .split("\n")
      .filter((line) => line.trim() !== "")
      .map(Number);
  } catch {
    return [];
  }
}

export function parseCpuStat(text: string): ThrottleStats {
  const fields = new Map(
    text
      .split("\n")
      .map((line) => line.trim().split(/\s+/))
      .filter((parts) => parts.length === 2)
      .map(([key, value]) => [key ?? "", Number(value)]),
  );
  return {
    periods: fields.get("nr_periods") ?? 0,
    throttled: fields.get("nr_throttled") ?? 0,
    throttledSeconds: (fields.get("throttled_time") ?? 0) / 1e9,
  };
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
