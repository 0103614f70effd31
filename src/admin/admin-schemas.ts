import { z } from "zod";
import {
  deviceCertificateSchema,
  deviceIdSchema,
  deviceLimitsSchema,
  deviceRecordSchema,
  groupSchema,
  scramVerifierSchema,
} from "../registry/device.js";
import { MAX_PAGE } from "../registry/device-store.js";

/**
 * The admin API's inputs, which the server validates, and its answers, which the OpenAPI
 * document describes. Both feed the document (openapi.ts) through the route table.
 */
const MAX_PEM = 16_384;
const serialSchema = z
  .string()
  .regex(/^[0-9A-Fa-f]{1,40}$/, "must be the certificate serial in hex")
  .transform((serial) => serial.toUpperCase().replace(/^0+(?=.)/, ""));
/** A query-string integer: digits only, so `1e3`, ` 5` or `0x10` are refused. */
const queryInt = (min: number, max: number, fallback: number) =>
  z
    .string()
    .regex(/^[0-9]{1,7}$/, "must be an integer")
    .transform(Number)
    .pipe(z.number().int().min(min).max(max))
    .default(fallback)
    .describe(`An integer from ${min} to ${max}; default ${fallback}`);

export const deviceParams = z.strictObject({ id: deviceIdSchema });
export const sessionParams = z.strictObject({ clientId: z.string().min(1).max(65_535) });

export const deviceListQuery = z.strictObject({
  after: z.string().max(256).optional().describe("List the devices whose ids sort after this"),
  limit: queryInt(1, MAX_PAGE, 100),
});
export const sessionListQuery = z.strictObject({ limit: queryInt(1, 100_000, 10_000) });

const scramChoice = z
  .boolean()
  .optional()
  .describe(
    "true: keep the generated password as a SCRAM-SHA-256 verifier, so the device may also use MQTT 5 enhanced authentication (AUTH packets; plain password CONNECTs still work)",
  );
const scramVerifierInput = scramVerifierSchema
  .optional()
  .describe(
    "A SCRAM-SHA-256 verifier made elsewhere (PostgreSQL's format, as `sluice passwd --scram` writes it), stored as the device's credential: no password is generated, so the registry never sees it",
  );

export const createDevice = z
  .strictObject({
    id: deviceIdSchema,
    groups: z.array(groupSchema).max(64).default([]),
    enabled: z.boolean().default(true),
    limits: deviceLimitsSchema.optional(),
    password: z.boolean().default(true).describe("false: a certificate-only device"),
    scram: scramChoice,
    scramVerifier: scramVerifierInput,
    replacesPasswordUser: z
      .boolean()
      .default(false)
      .describe(
        "A device is consulted before the password file (auth.passwordFile), so one named like a user there takes that name over. Without true here such a device is refused with 409.",
      ),
  })
  .refine(
    (input) => input.password || (input.scram !== true && input.scramVerifier === undefined),
    "password: false is a certificate-only device: it takes no scram or scramVerifier",
  )
  .refine(
    (input) => input.scram !== false || input.scramVerifier === undefined,
    "scramVerifier is a SCRAM credential: scram: false contradicts it",
  );
export const rotateDevice = z
  .strictObject({
    scram: scramChoice.describe(
      "true: keep the new password as a SCRAM-SHA-256 verifier; false: as a scrypt hash; absent: as the old one was kept",
    ),
    scramVerifier: scramVerifierInput,
  })
  .refine(
    (input) => input.scram !== false || input.scramVerifier === undefined,
    "scramVerifier is a SCRAM credential: scram: false contradicts it",
  );
export const patchDevice = z
  .strictObject({
    enabled: z.boolean().optional(),
    groups: z.array(groupSchema).max(64).optional(),
    limits: deviceLimitsSchema.nullable().optional(),
  })
  .refine((patch) => Object.keys(patch).length > 0, "nothing to change");
export const certificateRequest = z.strictObject({
  csr: z
    .string()
    .max(MAX_PEM)
    .optional()
    .describe("PEM PKCS#10; its subject CN must be the device id. Without it a key pair is made."),
  validityDays: z.number().int().min(1).max(825).optional(),
  replace: z.boolean().default(true).describe("Revoke the device's other certificates"),
});
export const tokenRequest = z.strictObject({
  ttlSeconds: z
    .number()
    .int()
    .min(60)
    .max(30 * 86_400)
    .optional(),
});
export const enrollRequest = z.strictObject({
  id: deviceIdSchema,
  token: z.string().min(16).max(256),
  csr: z.string().max(MAX_PEM).optional(),
});
export const revokeRequest = z.strictObject({ serial: serialSchema });

/** Answers are described, not validated: the format says enough. */
const timestamp = z.string().meta({ format: "date-time" });
export const deviceView = deviceRecordSchema.omit({ passwordHash: true }).extend({
  certificates: z.array(deviceCertificateSchema),
  hasPassword: z.boolean(),
  scram: z
    .boolean()
    .describe(
      "The password is kept as a SCRAM-SHA-256 verifier: MQTT 5 enhanced authentication works",
    ),
  createdAt: timestamp,
  rotatedAt: timestamp,
  updatedAt: timestamp,
  lastSeenAt: timestamp.optional(),
});
export const devicePage = z.object({
  devices: z.array(deviceView),
  next: z.string().optional().describe("The `after` of the next page; absent on the last"),
});
export const createdDevice = z.object({
  id: z.string(),
  password: z
    .string()
    .optional()
    .describe("Shown this once; absent for a certificate-only device or a scramVerifier"),
  device: deviceView,
});
export const rotatedPassword = z.object({
  id: z.string(),
  password: z.string().optional().describe("Shown this once; absent when a scramVerifier was sent"),
});
export const issuedCertificate = z.object({
  id: z.string(),
  serial: z.string(),
  notAfter: timestamp,
  certificate: z.string().describe("PEM"),
  privateKey: z.string().optional().describe("PEM (PKCS#8), only when no CSR was sent; shown once"),
  ca: z.string().describe("PEM of the CA to trust"),
});
export const enrollmentToken = z.object({
  id: z.string(),
  token: z.string().describe("Shown this once"),
  expiresAt: timestamp,
});
export const sessionList = z.object({
  sessions: z.array(
    z.object({ clientId: z.string(), node: z.string(), connectedAt: timestamp.optional() }),
  ),
  truncated: z.boolean(),
});
export const apiErrorBody = z.object({
  error: z.string(),
  details: z.array(z.string()).optional(),
});
