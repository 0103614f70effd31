import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from "node:crypto";
import { promisify } from "node:util";
import {
  normalizedPasswordBytes,
  SaslprepError,
  saslprepName,
  saslprepPassword,
  utf8Text,
} from "./saslprep.js";

const pbkdf2Async = promisify(pbkdf2);

/** The MQTT 5 Authentication Method and SASL mechanism name (RFC 7677). */
export const SCRAM_SHA_256 = "SCRAM-SHA-256";

/** RFC 7677's minimum, and PostgreSQL's default. */
export const SCRAM_DEFAULT_ITERATIONS = 4096;
/** A crafted file must not make one CONNECT cost seconds of CPU. */
export const SCRAM_MAX_ITERATIONS = 1_000_000;
const KEY_BYTES = 32;
const SALT_BYTES = 16;
const NONCE_BYTES = 18;
/** Longest SCRAM message accepted: names, nonces and a proof fit many times over. */
const MAX_MESSAGE_BYTES = 1024;

/**
 * What a server keeps to verify SCRAM-SHA-256 without knowing the password (RFC 5802 §3):
 * StoredKey = H(HMAC(SaltedPassword, "Client Key")), ServerKey = HMAC(SaltedPassword, "Server Key").
 */
export interface ScramCredential {
  iterations: number;
  salt: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

/**
 * Derives a credential from a password's bytes as they are salted (RFC 5802's
 * Normalize(password) already applied: see scramCredentialOf and normalizedPasswordBytes).
 */
export async function deriveScramCredential(
  password: Buffer,
  salt: Buffer = randomBytes(SALT_BYTES),
  iterations = SCRAM_DEFAULT_ITERATIONS,
): Promise<ScramCredential> {
  const salted = await pbkdf2Async(password, salt, iterations, KEY_BYTES, "sha256");
  return {
    iterations,
    salt,
    storedKey: sha256(hmac(salted, "Client Key")),
    serverKey: hmac(salted, "Server Key"),
  };
}

/**
 * A new credential for a password, which must pass SASLprep as a stored string (RFC 5802 §2.2,
 * RFC 4013): `sluice passwd --scram` and the device registry write these. A password SASLprep
 * refuses (control characters, unassigned code points, mixed direction) throws SaslprepError,
 * since no conforming client could send the same bytes.
 */
export async function scramCredentialOf(
  password: Buffer | string,
  iterations = SCRAM_DEFAULT_ITERATIONS,
): Promise<ScramCredential> {
  const text = typeof password === "string" ? password : utf8(password);
  return deriveScramCredential(Buffer.from(saslprepPassword(text), "utf8"), undefined, iterations);
}

function utf8(bytes: Buffer): string {
  const text = utf8Text(bytes);
  if (text === undefined) throw new SaslprepError("the password is not UTF-8");
  return text;
}

/** PostgreSQL's verifier format: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`. */
export function encodeScramCredential(credential: ScramCredential): string {
  const b64 = (b: Buffer) => b.toString("base64");
  return `${SCRAM_SHA_256}$${credential.iterations}:${b64(credential.salt)}$${b64(credential.storedKey)}:${b64(credential.serverKey)}`;
}

/** Parses PostgreSQL's verifier format; returns a reason string when it is not one. */
export function parseScramCredential(encoded: string): ScramCredential | string {
  const match =
    /^SCRAM-SHA-256\$(\d{1,10}):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$/.exec(
      encoded,
    );
  if (match === null) return "malformed SCRAM-SHA-256 verifier";
  const iterations = Number(match[1]);
  if (iterations < 1) return "malformed SCRAM-SHA-256 iterations";
  if (iterations > SCRAM_MAX_ITERATIONS) return "SCRAM-SHA-256 iterations too high";
  const salt = Buffer.from(match[2] as string, "base64");
  const storedKey = Buffer.from(match[3] as string, "base64");
  const serverKey = Buffer.from(match[4] as string, "base64");
  if (salt.length === 0 || storedKey.length !== KEY_BYTES || serverKey.length !== KEY_BYTES) {
    return "malformed SCRAM-SHA-256 salt or keys";
  }
  return { iterations, salt, storedKey, serverKey };
}

/**
 * Whether a plain password matches a credential (a password CONNECT against a SCRAM entry):
 * normalized as a SCRAM client would before it is salted.
 */
export async function scramPasswordMatches(
  password: Buffer,
  credential: ScramCredential,
): Promise<boolean> {
  const derived = await deriveScramCredential(
    normalizedPasswordBytes(password),
    credential.salt,
    credential.iterations,
  );
  return timingSafeEqual(derived.storedKey, credential.storedKey);
}

/** Why an exchange ended without a verified user; the client only learns "refused". */
export type ScramRefusal = "malformed" | "unknown_user" | "bad_password";

export type ScramStep =
  | { kind: "continue"; data: Buffer }
  | { kind: "verified"; username: string; data: Buffer }
  | { kind: "refused"; reason: ScramRefusal; detail: string };

/** An exchange between its server-first and client-final messages. */
interface SentFirst {
  at: "sent-first";
  username: string;
  credential: ScramCredential | undefined;
  nonce: string;
  gs2Header: string;
  clientFirstBare: string;
  serverFirst: string;
}

/** Finds a user's credential; undefined when the user is unknown or has none for SCRAM. */
export type ScramCredentials = (username: string) => Promise<ScramCredential | undefined>;

/**
 * The server side of one SCRAM-SHA-256 exchange (RFC 5802, RFC 7677), without channel
 * binding: client-first → server-first, client-final → server-final. An unknown user gets a
 * made-up salt (fixed per user and secret, the secret shared by the cluster's nodes), so the
 * exchange does not tell which users exist; it fails at the proof like a wrong password.
 */
export class ScramExchange {
  private state: { at: "start" } | SentFirst | { at: "done" } = { at: "start" };

  constructor(
    private readonly credentials: ScramCredentials,
    /** The secret for unknown users' made-up salts: the cluster's where there is one. */
    private readonly decoySecret: () => Promise<Buffer>,
    private readonly serverNonce: () => string = () => randomBytes(NONCE_BYTES).toString("base64"),
  ) {}

  private named: string | undefined;

  /** The user named in the client-first message, once it was read. */
  get username(): string | undefined {
    return this.named;
  }

  async step(message: Buffer | undefined): Promise<ScramStep> {
    const state = this.state;
    this.state = { at: "done" };
    if (message === undefined || message.length > MAX_MESSAGE_BYTES) {
      return refused("malformed", "missing or oversized SCRAM message");
    }
    const text = message.toString("utf8");
    if (state.at === "start") return this.clientFirst(text);
    if (state.at === "sent-first") return verifyClientFinal(text, state);
    return refused("malformed", "SCRAM exchange already finished");
  }

  private async clientFirst(text: string): Promise<ScramStep> {
    // gs2-header: "n,," (no channel binding) or "y,," (client could but thinks we cannot);
    // "p=" asks for channel binding, which Sluice does not offer. No authzid.
    const header = /^([ny]),,/.exec(text);
    if (header === null) return refused("malformed", "unsupported GS2 header or authzid");
    const bare = text.slice(header[0].length);
    const attributes = parseAttributes(bare);
    const name = attributes?.get("n");
    const clientNonce = attributes?.get("r");
    if (attributes === undefined || name === undefined || clientNonce === undefined) {
      return refused("malformed", "client-first message needs n= and r=");
    }
    if (bare.startsWith("m=")) return refused("malformed", "mandatory extension not supported");
    if (!/^[\x21-\x2b\x2d-\x7e]+$/.test(clientNonce)) {
      return refused("malformed", "client nonce has characters outside RFC 5802's range");
    }
    const decoded = decodeSaslName(name);
    if (decoded === undefined || decoded === "") {
      return refused("malformed", "user name is empty or badly escaped");
    }
    // [RFC 5802 §5.1]: the server prepares the name with SASLprep (as a query) before lookup.
    let username: string;
    try {
      username = saslprepName(decoded);
    } catch {
      return refused("malformed", "user name fails SASLprep");
    }
    this.named = username;
    const credential = await this.credentials(username);
    const { salt, iterations } = credential ?? (await this.decoy(username));
    const nonce = clientNonce + this.serverNonce();
    const serverFirst = `r=${nonce},s=${salt.toString("base64")},i=${iterations}`;
    this.state = {
      at: "sent-first",
      username,
      credential,
      nonce,
      gs2Header: header[0],
      clientFirstBare: bare,
      serverFirst,
    };
    return { kind: "continue", data: Buffer.from(serverFirst) };
  }

  private async decoy(username: string): Promise<{ salt: Buffer; iterations: number }> {
    const secret = await this.decoySecret();
    const salt = createHmac("sha256", secret).update(username).digest().subarray(0, 16);
    return { salt, iterations: SCRAM_DEFAULT_ITERATIONS };
  }
}

function verifyClientFinal(text: string, state: SentFirst): ScramStep {
  const proofAt = text.lastIndexOf(",p=");
  if (proofAt < 0) return refused("malformed", "client-final message needs p=");
  const withoutProof = text.slice(0, proofAt);
  const attributes = parseAttributes(withoutProof);
  const proof = Buffer.from(text.slice(proofAt + 3), "base64");
  // c= is base64 of the client-first message's gs2-header (no channel binding data).
  if (attributes?.get("c") !== Buffer.from(state.gs2Header).toString("base64")) {
    return refused("malformed", "channel binding data does not match the GS2 header");
  }
  if (attributes?.get("r") !== state.nonce) return refused("malformed", "nonce mismatch");
  if (state.credential === undefined) {
    return refused("unknown_user", "no SCRAM credential for this user");
  }
  const authMessage = `${state.clientFirstBare},${state.serverFirst},${withoutProof}`;
  const clientSignature = hmac(state.credential.storedKey, authMessage);
  if (proof.length !== clientSignature.length) return refused("bad_password", "proof length");
  const clientKey = Buffer.alloc(proof.length);
  for (let i = 0; i < proof.length; i++) {
    clientKey[i] = (proof[i] as number) ^ (clientSignature[i] as number);
  }
  if (!timingSafeEqual(sha256(clientKey), state.credential.storedKey)) {
    return refused("bad_password", "proof does not verify");
  }
  const serverSignature = hmac(state.credential.serverKey, authMessage).toString("base64");
  return { kind: "verified", username: state.username, data: Buffer.from(`v=${serverSignature}`) };
}

function refused(reason: ScramRefusal, detail: string): ScramStep {
  return { kind: "refused", reason, detail };
}

/** `a=1,b=2` into a map; undefined when an attribute is malformed or repeated. */
function parseAttributes(text: string): Map<string, string> | undefined {
  const attributes = new Map<string, string>();
  for (const part of text.split(",")) {
    if (part.length < 2 || part[1] !== "=") return undefined;
    const key = part[0] as string;
    if (attributes.has(key)) return undefined;
    attributes.set(key, part.slice(2));
  }
  return attributes;
}

/** RFC 5802 saslname: "=2C" is ",", "=3D" is "=", any other "=" is an error. */
function decodeSaslName(name: string): string | undefined {
  if (/=(?!2C|3D)/.test(name)) return undefined;
  return name.replace(/=2C/g, ",").replace(/=3D/g, "=");
}

function hmac(key: Buffer, data: string): Buffer {
  return createHmac("sha256", key).update(data).digest();
}

function sha256(data: Buffer): Buffer {
  return createHash("sha256").update(data).digest();
}
