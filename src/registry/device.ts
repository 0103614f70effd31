import { z } from "zod";

import { DEVICE_ID_PATTERN, DEVICE_ID_RULE } from "../pki/device-id.js";
import { parseScramCredential, SCRAM_SHA_256 } from "../security/scram.js";

/** A device id is its MQTT client id, its username and its certificate's CN. */
export const deviceIdSchema = z.string().regex(DEVICE_ID_PATTERN, `must be ${DEVICE_ID_RULE}`);

export const groupSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/, "must be 1-64 characters of A-Z a-z 0-9 . _ : -");

/** Per-device publish limits: override `limits.publish` for this device. */
export const deviceLimitsSchema = z.strictObject({
  messagesPerSecond: z.number().int().positive().max(1_000_000).optional(),
  bytesPerSecond: z.number().int().positive().max(1_073_741_824).optional(),
});

/** A device certificate the registry knows of: issued by Sluice's CA, or enrolled by an operator. */
export const deviceCertificateSchema = z.strictObject({
  /** Upper-case hex without leading zeros, as Node's TLS reports it. */
  serial: z.string().regex(/^[0-9A-F]{1,40}$/),
  notAfter: z.string(),
});

/**
 * A SCRAM-SHA-256 verifier in PostgreSQL's format, as `sluice passwd --scram` writes it: what a
 * device needs for MQTT 5 enhanced authentication, without the registry seeing its password.
 */
export const scramVerifierSchema = z
  .string()
  .max(512)
  .superRefine((value, context) => {
    const parsed = parseScramCredential(value);
    if (typeof parsed === "string") {
      context.addIssue({
        code: "custom",
        message: `${parsed}: expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`,
      });
    }
  });

/** Whether a stored hash is a SCRAM-SHA-256 verifier (which also verifies plain passwords). */
export function isScramVerifier(passwordHash: string | undefined): boolean {
  return passwordHash?.startsWith(`${SCRAM_SHA_256}$`) === true;
}

/** What the registry stores per device. Never holds a password, only its hash. */
export const deviceRecordSchema = z.strictObject({
  id: deviceIdSchema,
  enabled: z.boolean(),
  /**
   * Sluice's salted scrypt hash, or a SCRAM-SHA-256 verifier (which serves MQTT 5 enhanced
   * authentication and plain passwords alike); absent for certificate-only devices.
   */
  passwordHash: z.string().optional(),
  certificates: z.array(deviceCertificateSchema).max(16),
  groups: z.array(groupSchema).max(64),
  limits: deviceLimitsSchema.optional(),
  createdAt: z.string(),
  /** When the credentials last changed; a live connection made with older ones is closed. */
  rotatedAt: z.string(),
  updatedAt: z.string(),
});

export type DeviceRecord = z.output<typeof deviceRecordSchema>;
export type DeviceLimits = z.output<typeof deviceLimitsSchema>;

/** What a device looks like to API clients: no hash, just whether a password is set. */
export interface DeviceView {
  id: string;
  enabled: boolean;
  hasPassword: boolean;
  /** The password is kept as a SCRAM-SHA-256 verifier: MQTT 5 enhanced authentication works. */
  scram: boolean;
  certificates: DeviceRecord["certificates"];
  groups: string[];
  limits?: DeviceLimits;
  createdAt: string;
  rotatedAt: string;
  updatedAt: string;
  lastSeenAt?: string;
}

export function viewOf(record: DeviceRecord, lastSeenAt?: string): DeviceView {
  const { passwordHash, ...rest } = record;
  return {
    ...rest,
    hasPassword: passwordHash !== undefined,
    scram: isScramVerifier(passwordHash),
    ...(lastSeenAt === undefined ? {} : { lastSeenAt }),
  };
}

/** Parses a stored record; a corrupt one reads as absent rather than crashing a CONNECT. */
export function parseRecord(text: string | null | undefined): DeviceRecord | undefined {
  if (text === null || text === undefined) return undefined;
  try {
    const parsed = deviceRecordSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
