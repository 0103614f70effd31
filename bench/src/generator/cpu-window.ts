import type { CpuWindow } from "./messages.js";

/** This process's CPU time between begin() and end(): the generator's own load. */
export class CpuWindowMeter {
  private startUsage: NodeJS.CpuUsage | undefined;
  private startNs = 0n;
  private result: CpuWindow | undefined;

  begin(): void {
    this.startUsage = process.cpuUsage();
    this.startNs = process.hrtime.bigint();
  }

  end(): void {
    if (!this.startUsage) return;
    const used = process.cpuUsage(this.startUsage);
    this.result = {
      userMicros: used.user,
      systemMicros: used.system,
      wallMicros: Number((process.hrtime.bigint() - this.startNs) / 1000n),
    };
  }

  /** The window's figures; zeros when the window never closed (a failed run). */
  get window(): CpuWindow {
    return this.result ?? { userMicros: 0, systemMicros: 0, wallMicros: 0 };
  }
}

/** CPU of a window as percent of one core (100 = one core fully busy). */
export function cpuPercent(window: CpuWindow): number {
  if (window.wallMicros <= 0) return 0;
  return ((window.userMicros + window.systemMicros) / window.wallMicros) * 100;
}
