import { createHash, pbkdf2, randomBytes, scrypt, timingSafeEqual } from "node:crypto";
import { promisify } from "node:util";
import {
  encodeScramCredential,
  parseScramCredential,
  SCRAM_DEFAULT_ITERATIONS,
  SCRAM_SHA_256,
  type ScramCredential,
  scramCredentialOf,
  scramPasswordMatches,
} from "./scram.js";

const scryptAsync = promisify(scrypt) as (
  password: Buffer,
  salt: Buffer,
  keylen: number,
  options: { N: number; r: number; p: number; maxmem: number },
) => Promise<Buffer>;
const pbkdf2Async = promisify(pbkdf2);

/** Sluice's default: scrypt N=2^14, r=8, p=1 (about 16 MiB and tens of milliseconds). */
const DEFAULT_COST = { ln: 14, r: 8, p: 1 } as const;
const KEY_BYTES = 32;
const SALT_BYTES = 16;
/** Bounds for costs read from a file, so a crafted file cannot stall or exhaust the node. */
const MAX_SCRYPT_LN = 20;
const MAX_SCRYPT_RP = 64;
const MAX_SCRYPT_P = 16;
/** scrypt needs 128 * N * r bytes per hash. */
const MAX_SCRYPT_MEMORY = 256 * 1024 * 1024;
const MAX_PBKDF2_ITERATIONS = 10_000_000;

export interface ScryptCost {
  ln: number;
  r: number;
  p: number;
}

/**
 * A parsed password hash. Formats: Sluice's PHC string `$scrypt$ln=14,r=8,p=1$<salt>$<key>`,
 * and Mosquitto's `$6$<salt>$<SHA-512(password || salt)>` (1.x) and
 * `$7$<iterations>$<salt>$<PBKDF2-HMAC-SHA512>` (2.x), all base64, and PostgreSQL's
 * `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, the one format that also serves
 * MQTT 5 enhanced authentication.
 */
export type ParsedHash =
  | { kind: "scrypt"; cost: ScryptCost; salt: Buffer; key: Buffer }
  | { kind: "sha512"; salt: Buffer; key: Buffer }
  | { kind: "pbkdf2-sha512"; iterations: number; salt: Buffer; key: Buffer }
  | { kind: "scram-sha-256"; credential: ScramCredential };

/** Parses a stored hash; returns a reason string when it is not one Sluice can verify. */
export function parseHash(encoded: string): ParsedHash | string {
  if (encoded.startsWith(`${SCRAM_SHA_256}$`)) {
    const credential = parseScramCredential(encoded);
    return typeof credential === "string" ? credential : { kind: "scram-sha-256", credential };
  }
  const parts = encoded.split("$");
  // A leading "$" makes parts[0] empty.
  if (parts[0] !== "") return "not a $-prefixed hash";
  switch (parts[1]) {
    case "scrypt": {
      if (parts.length !== 5) return "malformed scrypt hash";
      const params = new Map(
        (parts[2] ?? "").split(",").map((kv) => kv.split("=") as [string, string]),
      );
      const cost = {
        ln: Number(params.get("ln")),
        r: Number(params.get("r")),
        p: Number(params.get("p")),
      };
      if (
        ![cost.ln, cost.r, cost.p].every(Number.isInteger) ||
        cost.ln < 1 ||
        cost.r < 1 ||
        cost.p < 1
      ) {
        return "malformed scrypt parameters";
      }
      if (cost.ln > MAX_SCRYPT_LN || cost.r > MAX_SCRYPT_RP || cost.p > MAX_SCRYPT_P) {
        return "scrypt cost too high";
      }
      if (128 * 2 ** cost.ln * cost.r > MAX_SCRYPT_MEMORY) return "scrypt memory cost too high";
      const salt = Buffer.from(parts[3] ?? "", "base64");
      const key = Buffer.from(parts[4] ?? "", "base64");
      if (salt.length === 0 || key.length < 16) return "malformed scrypt salt or key";
      return { kind: "scrypt", cost, salt, key };
    }
    case "6": {
      if (parts.length !== 4) return "malformed $6$ hash";
      const salt = Buffer.from(parts[2] ?? "", "base64");
      const key = Buffer.from(parts[3] ?? "", "base64");
      if (salt.length === 0 || key.length !== 64) return "malformed $6$ salt or key";
      return { kind: "sha512", salt, key };
    }
    case "7": {
      if (parts.length !== 5) return "malformed $7$ hash";
      const iterations = Number(parts[2]);
      if (!Number.isInteger(iterations) || iterations < 1) return "malformed $7$ iterations";
      if (iterations > MAX_PBKDF2_ITERATIONS) return "$7$ iterations too high";
      const salt = Buffer.from(parts[3] ?? "", "base64");
      const key = Buffer.from(parts[4] ?? "", "base64");
      if (salt.length === 0 || key.length !== 64) return "malformed $7$ salt or key";
      return { kind: "pbkdf2-sha512", iterations, salt, key };
    }
    default:
      return "unknown hash format";
  }
}

/** A salted scrypt hash of a password, as Sluice writes it. Never blocks the event loop. */
export async function hashPassword(
  password: Buffer | string,
  cost: ScryptCost = DEFAULT_COST,
): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const key = await scryptKey(Buffer.from(password), salt, cost, KEY_BYTES);
  return `$scrypt$ln=${cost.ln},r=${cost.r},p=${cost.p}$${salt.toString("base64")}$${key.toString("base64")}`;
}

/**
 * A SCRAM-SHA-256 verifier of a password, for users who authenticate with MQTT 5's AUTH; the
 * password is SASLprepped first (throws SaslprepError when SASLprep refuses it).
 */
export async function hashPasswordScram(
  password: Buffer | string,
  iterations = SCRAM_DEFAULT_ITERATIONS,
): Promise<string> {
  return encodeScramCredential(await scramCredentialOf(password, iterations));
}

/** Verifies a password against a parsed hash in constant time. */
export async function verifyParsed(password: Buffer, hash: ParsedHash): Promise<boolean> {
  let derived: Buffer;
  switch (hash.kind) {
    case "scram-sha-256":
      return scramPasswordMatches(password, hash.credential);
    case "scrypt":
      derived = await scryptKey(password, hash.salt, hash.cost, hash.key.length);
      break;
    case "sha512":
      derived = createHash("sha512").update(password).update(hash.salt).digest();
      break;
    case "pbkdf2-sha512":
      derived = await pbkdf2Async(password, hash.salt, hash.iterations, hash.key.length, "sha512");
      break;
  }
  return derived.length === hash.key.length && timingSafeEqual(derived, hash.key);
}

/** Verifies a password against an encoded hash; an unusable hash verifies as false. */
export async function verifyPassword(password: Buffer, encoded: string): Promise<boolean> {
  const hash = parseHash(encoded);
  return typeof hash === "string" ? false : verifyParsed(password, hash);
}

function scryptKey(
  password: Buffer,
  salt: Buffer,
  cost: ScryptCost,
  keylen: number,
): Promise<Buffer> {
  const N = 2 ** cost.ln;
  // scrypt needs 128 * N * r bytes; allow that plus headroom instead of Node's 32 MiB default.
  return scryptAsync(password, salt, keylen, {
    N,
    r: cost.r,
    p: cost.p,
    maxmem: 256 * N * cost.r + 1024 * 1024,
  });
}
