import { access, open } from "node:fs/promises";
import { PkiInputError } from "./pki-error.js";

/** Mode for private keys and anything that must not be world-readable. */
export const PRIVATE_FILE_MODE = 0o600;
export const PUBLIC_FILE_MODE = 0o644;

/**
 * Creates `path` with `text`, refusing to replace an existing file: a CA key or a device key
 * overwritten by a repeated command would be lost for good. The mode applies at creation, so
 * a key is never readable by others, not even for an instant.
 */
export async function writeNewFile(path: string, text: string, mode: number): Promise<void> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, "wx", mode);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") {
      throw new PkiInputError(`${path} already exists; refusing to overwrite it`);
    }
    throw error;
  }
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Refuses up front when any of `paths` exists, so a command writing several files never
 * leaves half of them behind (a new key without its certificate, or the reverse).
 */
export async function refuseExisting(paths: readonly string[]): Promise<void> {
  for (const path of paths) {
    const exists = await access(path).then(
      () => true,
      () => false,
    );
    if (exists) throw new PkiInputError(`${path} already exists; refusing to overwrite it`);
  }
}
