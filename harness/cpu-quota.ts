import { randomBytes } from "node:crypto";
import { accessSync, constants, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** cgroup v1's cpu controller (this machine's); cgroup v2 keeps cpu.max at the root instead. */
const V1_CONTROLLER = "/sys/fs/cgroup/cpu";
const V2_ROOT = "/sys/fs/cgroup";
const PERIOD_US = 100_000;

/** Why a CPU quota cannot be set here, or undefined if it can. */
export function cpuQuotaUnavailable(): string | undefined {
  if (safeAccess(join(V1_CONTROLLER, "cgroup.procs"))) return undefined;
  if (safeAccess(join(V2_ROOT, "cgroup.subtree_control"))) return undefined;
  return "no writable cgroup cpu controller (run the tests as root on Linux)";
}

/**
 * A real CPU limit on a test's process: a cgroup of its own with a CFS quota of `cores`.
 * Removed by `release()` (tests call it in a finally), which moves what still runs in it back
 * to the root first.
 */
export class CpuQuota {
  private constructor(
    private readonly path: string,
    private readonly root: string,
  ) {}

  static create(cores: number): CpuQuota {
    const v1 = safeAccess(join(V1_CONTROLLER, "cgroup.procs"));
    const root = v1 ? V1_CONTROLLER : V2_ROOT;
    const path = join(root, `sluice-test-${randomBytes(4).toString("hex")}`);
    mkdirSync(path);
    const quota = Math.max(1_000, Math.round(cores * PERIOD_US));
    if (v1) {
      writeFileSync(join(path, "cpu.cfs_period_us"), String(PERIOD_US));
      writeFileSync(join(path, "cpu.cfs_quota_us"), String(quota));
    } else {
      writeFileSync(join(path, "cpu.max"), `${quota} ${PERIOD_US}`);
    }
    return new CpuQuota(path, root);
  }

  add(pid: number): void {
    writeFileSync(join(this.path, "cgroup.procs"), String(pid));
  }

  release(): void {
    let pids: string[] = [];
    try {
      pids = readFileSync(join(this.path, "cgroup.procs"), "utf8").split("\n").filter(Boolean);
    } catch {
      return;
    }
    for (const pid of pids) {
      try {
        writeFileSync(join(this.root, "cgroup.procs"), pid);
      } catch {
        // exited meanwhile
      }
    }
    try {
      rmdirSync(this.path);
    } catch {
      // a task still exiting holds it; the kernel frees it once empty
    }
  }
}

function safeAccess(file: string): boolean {
  try {
    accessSync(file, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}
