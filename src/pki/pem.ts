import { PkiInputError } from "./pki-error.js";

export interface PemBlock {
  label: string;
  der: Buffer;
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/g;
const BASE64_BODY = /^[A-Za-z0-9+/=\s]*$/;

/**
 * Splits PEM text into its blocks, refusing text over `maxBytes`, bodies that are not base64
 * (encrypted legacy keys carry `Proc-Type` headers: Node's own parser handles those) and text
 * with no block at all. `what` names the input in errors ("the CSR").
 */
export function readPemBlocks(text: unknown, what: string, maxBytes: number): PemBlock[] {
  if (typeof text !== "string" && !Buffer.isBuffer(text)) {
    throw new PkiInputError(`${what} must be PEM text`);
  }
  if (text.length > maxBytes) {
    throw new PkiInputError(`${what} is larger than ${maxBytes} bytes`);
  }
  const pem = typeof text === "string" ? text : text.toString("utf8");
  const blocks: PemBlock[] = [];
  for (const match of pem.matchAll(PEM_BLOCK)) {
    const label = match[1] ?? "";
    const body = match[2] ?? "";
    if (!BASE64_BODY.test(body)) {
      throw new PkiInputError(`${what}: the ${label} block is not plain base64`);
    }
    const der = Buffer.from(body.replace(/\s+/g, ""), "base64");
    if (der.length === 0) throw new PkiInputError(`${what}: the ${label} block is empty`);
    blocks.push({ label, der });
  }
  if (blocks.length === 0) throw new PkiInputError(`${what} is not PEM (no BEGIN/END block)`);
  return blocks;
}

/** The single block of PEM text, which must carry one of `labels`. */
export function readSinglePem(
  text: unknown,
  what: string,
  maxBytes: number,
  labels: readonly string[],
): PemBlock {
  const blocks = readPemBlocks(text, what, maxBytes);
  if (blocks.length !== 1) {
    throw new PkiInputError(`${what} must hold exactly one PEM block, not ${blocks.length}`);
  }
  const block = blocks[0] as PemBlock;
  if (!labels.includes(block.label)) {
    throw new PkiInputError(
      `${what} is a "${block.label}" PEM block; expected ${labels.map((l) => `"${l}"`).join(" or ")}`,
    );
  }
  return block;
}

export function toPem(label: string, der: ArrayBuffer | Uint8Array): string {
  const base64 = Buffer.from(der instanceof ArrayBuffer ? new Uint8Array(der) : der).toString(
    "base64",
  );
  const lines = base64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}
