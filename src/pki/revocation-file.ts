import { readFile } from "node:fs/promises";
import { replaceFile } from "../files/replace-file.js";
import type { RevokedCertificate } from "./build-crl.js";
import { PkiInputError } from "./pki-error.js";
import { parseSerialNumber } from "./serial-number.js";

/**
 * The CA directory's list of revoked serials (`revoked.json`), the source every CRL is built
 * from. The CRL itself expires and is re-signed; this list is what persists.
 *
 * `{ "revoked": [{ "serial": "4F2A...", "revokedAt": "2025-01-31T12:00:00.000Z" }] }`
 */
export async function readRevocationFile(path: string): Promise<RevokedCertificate[]> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (error) {
    throw new PkiInputError(`${path} is not valid JSON`, { cause: error });
  }
  const list = (document as { revoked?: unknown } | null)?.revoked;
  if (!Array.isArray(list)) throw new PkiInputError(`${path}: "revoked" must be a list`);
  return list.map((entry: unknown, index) => {
    const { serial, revokedAt } = (entry ?? {}) as { serial?: unknown; revokedAt?: unknown };
    const date = new Date(typeof revokedAt === "string" ? revokedAt : Number.NaN);
    if (Number.isNaN(date.getTime())) {
      throw new PkiInputError(`${path}: revoked[${index}].revokedAt is not an ISO date`);
    }
    try {
      return { serial: parseSerialNumber(serial), revokedAt: date };
    } catch (error) {
      throw new PkiInputError(`${path}: revoked[${index}].serial: ${(error as Error).message}`);
    }
  });
}

export async function writeRevocationFile(
  path: string,
  revoked: readonly RevokedCertificate[],
): Promise<void> {
  const document = {
    revoked: revoked.map((entry) => ({
      serial: entry.serial,
      revokedAt: entry.revokedAt.toISOString(),
    })),
  };
  await replaceFile(path, `${JSON.stringify(document, null, 2)}\n`, 0o644);
}
