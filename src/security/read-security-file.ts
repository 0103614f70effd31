import { readCappedFile } from "../files/read-capped-file.js";

/** Password files hold a line per device: 64 MiB is several hundred thousand devices. */
export const PASSWORD_FILE_MAX_BYTES = 64 * 1024 * 1024;
/** ACL files hold rules, patterns and per-user sections, never per-message data. */
export const ACL_FILE_MAX_BYTES = 16 * 1024 * 1024;

/** Reads a password, ACL or similar file; an unreadable or oversized one is a ConfigError. */
export function readSecurityFile(path: string, maxBytes: number): Promise<string> {
  return readCappedFile({ path, maxBytes, label: path });
}
