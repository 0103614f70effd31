import { access } from "node:fs/promises";
import { join } from "node:path";
import type { CertificateAuthority } from "./certificate-authority.js";
import { loadCaFiles } from "./load-ca.js";

/**
 * The files of a CA directory, as `sluice ca` writes them:
 * - `ca.crt`, `ca.key` (mode 0600): the CA, ours or an operator's intermediate;
 * - `chain.crt` (optional): appended to every issued certificate;
 * - `revoked.json`: every revoked serial, the source of the CRL;
 * - `ca.crl`: the current CRL, for listeners' `crl:` setting.
 */
export interface CaDirectory {
  dir: string;
  certFile: string;
  keyFile: string;
  chainFile: string;
  revokedFile: string;
  crlFile: string;
}

export function caDirectory(dir: string): CaDirectory {
  return {
    dir,
    certFile: join(dir, "ca.crt"),
    keyFile: join(dir, "ca.key"),
    chainFile: join(dir, "chain.crt"),
    revokedFile: join(dir, "revoked.json"),
    crlFile: join(dir, "ca.crl"),
  };
}

/** Loads the CA of a directory, with its chain file when there is one. */
export async function loadCaDirectory(directory: CaDirectory): Promise<CertificateAuthority> {
  const hasChain = await access(directory.chainFile).then(
    () => true,
    () => false,
  );
  return loadCaFiles({
    certFile: directory.certFile,
    keyFile: directory.keyFile,
    ...(hasChain ? { chainFile: directory.chainFile } : {}),
  });
}
