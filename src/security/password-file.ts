import { basename } from "node:path";
import { ConfigError } from "../errors.js";
import type { PasswordVerifier } from "./authenticator.js";
import { hashPassword, type ParsedHash, parseHash, verifyParsed } from "./password-hash.js";
import { PASSWORD_FILE_MAX_BYTES, readSecurityFile } from "./read-security-file.js";
import type { ScramCredential } from "./scram.js";

/**
 * A password file, `username:hash` per line (Mosquitto's format: files made by
 * mosquitto_passwd work unchanged). Blank lines and lines starting with # are ignored.
 */
export class PasswordFile implements PasswordVerifier {
  private constructor(
    private readonly users: ReadonlyMap<string, ParsedHash>,
    /** Verified against when the user is unknown, so that costs what a real check costs. */
    private readonly dummy: ParsedHash,
  ) {}

  static async load(path: string): Promise<PasswordFile> {
    const text = await readSecurityFile(path, PASSWORD_FILE_MAX_BYTES);
    return PasswordFile.parse(text, basename(path));
  }

  static async parse(text: string, source: string): Promise<PasswordFile> {
    const users = new Map<string, ParsedHash>();
    const problems: string[] = [];
    text.split(/\r?\n/).forEach((line, index) => {
      if (line.trim() === "" || line.startsWith("#")) return;
      const at = `${source}:${index + 1}`;
      const colon = line.indexOf(":");
      if (colon <= 0) {
        problems.push(`${at}: malformed line (expected username:hash)`);
        return;
      }
      const username = line.slice(0, colon);
      const hash = parseHash(line.slice(colon + 1).trim());
      if (typeof hash === "string") problems.push(`${at}: ${hash}`);
      else if (users.has(username)) problems.push(`${at}: duplicate user`);
      else users.set(username, hash);
    });
    if (problems.length > 0) throw new ConfigError(problems);
    // An unknown user is checked against a real entry (same algorithm, same cost) and the
    // answer discarded, so response time does not reveal which users exist.
    const dummy =
      users.values().next().value ?? (parseHash(await hashPassword("unused")) as ParsedHash);
    return new PasswordFile(users, dummy);
  }

  get size(): number {
    return this.users.size;
  }

  has(username: string): boolean {
    return this.users.has(username);
  }

  usernames(): string[] {
    return [...this.users.keys()];
  }

  /** The user's SCRAM-SHA-256 credential; undefined for unknown users and other formats. */
  scramCredential(username: string): ScramCredential | undefined {
    const hash = this.users.get(username);
    return hash?.kind === "scram-sha-256" ? hash.credential : undefined;
  }

  /** Constant-time whether or not the user exists: an unknown user costs a full check too. */
  async verify(username: string, password: Buffer): Promise<boolean> {
    const hash = this.users.get(username);
    const valid = await verifyParsed(password, hash ?? this.dummy);
    return hash !== undefined && valid;
  }
}

/** The file's text with `username` set to `hash`; other lines and comments are kept. */
export function setUser(text: string, username: string, hash: string): string {
  const lines = text === "" ? [] : text.replace(/\n$/, "").split("\n");
  const entry = `${username}:${hash}`;
  const index = lines.findIndex((line) => line.startsWith(`${username}:`));
  if (index >= 0) lines[index] = entry;
  else lines.push(entry);
  return `${lines.join("\n")}\n`;
}

/** The file's text without `username`; undefined when the user is not in it. */
export function deleteUser(text: string, username: string): string | undefined {
  const lines = text.replace(/\n$/, "").split("\n");
  const kept = lines.filter((line) => !line.startsWith(`${username}:`));
  if (kept.length === lines.length) return undefined;
  return kept.length === 0 ? "" : `${kept.join("\n")}\n`;
}
