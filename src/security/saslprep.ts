import saslprep from "@mongodb-js/saslprep";
import { SluiceError } from "../errors.js";

/** A string SASLprep (RFC 4013) refuses; the message names the first offending character. */
export class SaslprepError extends SluiceError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("SASLPREP", message, options);
  }
}

/**
 * RFC 4013 SASLprep, as SCRAM uses it (RFC 5802 §2.2, §5.1): non-ASCII spaces become spaces,
 * characters "commonly mapped to nothing" (e.g. U+00AD soft hyphen) go, then NFKC; control and
 * other prohibited characters, and mixed-direction text, are refused. A password is a "stored
 * string" (unassigned code points refused); a user name is a "query" (they pass). Throws
 * SaslprepError.
 */
export function saslprepPassword(password: string): string {
  return prepare(password, false, "password");
}

/** SASLprep of a user name (a query: unassigned code points allowed). Throws SaslprepError. */
export function saslprepName(name: string): string {
  return prepare(name, true, "user name");
}

/**
 * The bytes a password is salted and hashed as (RFC 5802's Normalize): SASLprep of its UTF-8
 * text. Bytes that are not UTF-8, or text SASLprep refuses, are used as they are, as
 * PostgreSQL does, so verifiers made that way elsewhere keep working; Sluice itself refuses to
 * write such verifiers (saslprepPassword).
 */
export function normalizedPasswordBytes(password: Buffer): Buffer {
  const text = utf8Text(password);
  if (text === undefined) return password;
  try {
    return Buffer.from(saslprepPassword(text), "utf8");
  } catch {
    return password;
  }
}

/** The bytes as text when they are UTF-8; undefined when not. */
export function utf8Text(bytes: Buffer): string | undefined {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return undefined;
  }
}

/** RFC 3454 table B.1, "commonly mapped to nothing". */
const MAPPED_TO_NOTHING: ReadonlySet<number> = new Set([
  0x00ad,
  0x034f,
  0x1806,
  0x180b,
  0x180c,
  0x180d,
  0x200b,
  0x200c,
  0x200d,
  0x2060,
  0xfeff,
  ...Array.from({ length: 16 }, (_, i) => 0xfe00 + i),
]);

function withoutMappedToNothing(text: string): string[] {
  return [...text].filter((char) => !MAPPED_TO_NOTHING.has(char.codePointAt(0) as number));
}

function prepare(text: string, allowUnassigned: boolean, what: string): string {
  // The library fails on a string that maps to nothing: it is refused here as empty.
  if (text !== "" && withoutMappedToNothing(text).length === 0) {
    throw new SaslprepError(`the ${what} is empty after SASLprep (RFC 4013)`);
  }
  let prepared: string;
  try {
    prepared = saslprep(text, { allowUnassigned });
  } catch (error) {
    throw new SaslprepError(`the ${what} ${why(text, allowUnassigned)}`, { cause: error });
  }
  return prepared;
}

/** Names the first character SASLprep refuses on its own; otherwise the string-wide rule. */
function why(text: string, allowUnassigned: boolean): string {
  for (const char of withoutMappedToNothing(text)) {
    try {
      saslprep(char, { allowUnassigned });
    } catch {
      const code = (char.codePointAt(0) as number).toString(16).toUpperCase().padStart(4, "0");
      return `contains U+${code}, a character SASLprep (RFC 4013) prohibits or leaves unassigned`;
    }
  }
  return "mixes right-to-left and left-to-right characters, which SASLprep (RFC 4013 §6) refuses";
}
