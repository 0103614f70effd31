import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  /** 1-minute load average when the run started: a busy shared machine shows here. */
  loadAverageAtStart: number;
  os: string;
  node: string;
}

export interface Versions {
  sluice: string;
  aedes: string;
  aedesStock: string;
  mqtt: string;
  mosquitto: string;
  redis: string;
}

export function machineInfo(): MachineInfo {
  const cpuList = cpus();
  let os = `${process.platform} ${process.arch}`;
  try {
    const release = readFileSync("/etc/os-release", "utf8");
    os = /^PRETTY_NAME="?([^"\n]+)"?/m.exec(release)?.[1] ?? os;
  } catch {
    // not Linux, or no os-release
  }
  return {
    cpuModel: cpuList[0]?.model ?? "unknown",
    cores: cpuList.length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    loadAverageAtStart: loadavg()[0] ?? 0,
    os,
    node: process.version,
  };
}

function packageVersion(name: string): string {
  try {
    const url = new URL(`../../../../node_modules/${name}/package.json`, import.meta.url);
    return (JSON.parse(readFileSync(url, "utf8")) as { version: string }).version;
  } catch {
    return "unknown";
  }
}

function commandVersion(command: string, args: string[], pattern: RegExp): string {
  try {
    const output = execFileSync(command, args, {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
    return pattern.exec(output)?.[1] ?? "unknown";
  } catch (error) {
    // mosquitto -h exits non-zero but prints its version
    const output = String((error as { stdout?: unknown }).stdout ?? "");
    return pattern.exec(output)?.[1] ?? "unknown";
  }
}

export function versions(mosquittoPath: string): Versions {
  const sluice = (() => {
    try {
      const url = new URL("../../../../package.json", import.meta.url);
      return (JSON.parse(readFileSync(url, "utf8")) as { version: string }).version;
    } catch {
      return "unknown";
    }
  })();
  return {
    sluice,
    aedes: `${packageVersion("aedes")} (patched)`,
    aedesStock: packageVersion("aedes-stock"),
    mqtt: packageVersion("mqtt"),
    mosquitto: commandVersion(mosquittoPath, ["-h"], /mosquitto version (\S+)/),
    redis: commandVersion("redis-server", ["--version"], /v=(\S+)/),
  };
}
