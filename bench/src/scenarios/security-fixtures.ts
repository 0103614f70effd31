import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createTestPki } from "../../../harness/certs.js";
import { hashPassword } from "../../../src/security/password-hash.js";
import type { CleanupRegistry } from "../lifecycle/cleanup-registry.js";

export const BENCH_USER = "bench";

export interface SecurityFixtures {
  /** The throwaway CA the generator trusts, and the server certificate signed by it. */
  caFile: string;
  certFile: string;
  keyFile: string;
  passwordFile: string;
  password: string;
  aclFile: string;
  aclRules: number;
}

/**
 * An ACL of `rules` rules for the bench user where only the last one allows the bench's
 * topics: every publish and every delivery is checked against all of them (a deny would win
 * over an allow, so no rule can be skipped), the worst case for a list of that size.
 */
export function aclText(rules: number): string {
  const lines = [`user ${BENCH_USER}`];
  for (let i = 0; i < rules - 1; i++) lines.push(`topic readwrite plant/line-${i}/+/telemetry`);
  lines.push("topic readwrite bench/#");
  return `${lines.join("\n")}\n`;
}

/**
 * TLS material (openssl at run time, nothing committed), a password file hashed the way
 * Sluice hashes (scrypt) and an ACL, in `dir`; the PKI's folder is removed by `cleanup`.
 */
export async function createSecurityFixtures(
  dir: string,
  cleanup: CleanupRegistry,
  aclRules: number,
): Promise<SecurityFixtures> {
  const pki = await createTestPki();
  cleanup.add("bench PKI", () => pki.cleanup());
  const password = `bench-${Math.random().toString(36).slice(2)}`;
  const passwordFile = join(dir, "passwords");
  await writeFile(passwordFile, `${BENCH_USER}:${await hashPassword(password)}\n`, {
    mode: 0o600,
  });
  const aclFile = join(dir, "acl.conf");
  await writeFile(aclFile, aclText(aclRules), { mode: 0o600 });
  return {
    caFile: pki.caCert,
    certFile: pki.serverCert,
    keyFile: pki.serverKey,
    passwordFile,
    password,
    aclFile,
    aclRules,
  };
}
