import { readFileSync } from "node:fs";

/**
 * This process's open-files soft limit (children inherit it). Node cannot raise it, and the
 * hard limit here equals the soft one, so the connection scenarios cap N under it and say so.
 */
export function openFilesLimit(): number {
  try {
    const limits = readFileSync("/proc/self/limits", "utf8");
    const match = /^Max open files\s+(\d+|unlimited)/m.exec(limits);
    if (!match || match[1] === "unlimited") return Number.POSITIVE_INFINITY;
    return Number(match[1]);
  } catch {
    return 1024;
  }
}
