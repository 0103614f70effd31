import { closeSync, fstatSync, openSync, readFileSync, type Stats } from "node:fs";
import { open } from "node:fs/promises";
import { ConfigError } from "../errors.js";

/** How a file that configuration names is read: its size cap, and how problems name it. */
export interface CappedFile {
  path: string;
  maxBytes: number;
  /** Starts each problem line, e.g. `config file /etc/sluice.yaml`. */
  label: string;
}

/**
 * Reads a configuration, password or ACL file as UTF-8, refusing anything that is not a
 * regular file or is over its cap before a byte of it is parsed: a parser fed a huge file
 * (a list of millions of items) can take gigabytes.
 */
export async function readCappedFile(file: CappedFile): Promise<string> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(file.path, "r");
  } catch (error) {
    throw unreadable(file, error);
  }
  try {
    checkSize(file, await handle.stat());
    return await handle.readFile("utf8");
  } catch (error) {
    throw error instanceof ConfigError ? error : unreadable(file, error);
  } finally {
    await handle.close();
  }
}

/** The synchronous twin, for the config file that loadConfig() reads. */
export function readCappedFileSync(file: CappedFile): string {
  let fd: number;
  try {
    fd = openSync(file.path, "r");
  } catch (error) {
    throw unreadable(file, error);
  }
  try {
    checkSize(file, fstatSync(fd));
    return readFileSync(fd, "utf8");
  } catch (error) {
    throw error instanceof ConfigError ? error : unreadable(file, error);
  } finally {
    closeSync(fd);
  }
}

function checkSize(file: CappedFile, stats: Stats): void {
  if (!stats.isFile()) throw new ConfigError([`${file.label}: is not a regular file`]);
  if (stats.size > file.maxBytes) {
    throw new ConfigError([
      `${file.label}: ${stats.size} bytes is over the limit of ${file.maxBytes} bytes`,
    ]);
  }
}

function unreadable(file: CappedFile, error: unknown): ConfigError {
  const code = (error as NodeJS.ErrnoException).code ?? String(error);
  return new ConfigError([`${file.label}: cannot be read (${code})`], { cause: error });
}
