import { readFile } from "node:fs/promises";
import { ConfigError } from "../errors.js";

/** Reads a password, ACL or similar file; an unreadable file is a ConfigError naming it. */
export async function readSecurityFile(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    throw new ConfigError([
      `${path}: cannot be read (${(error as NodeJS.ErrnoException).code ?? error})`,
    ]);
  }
}
