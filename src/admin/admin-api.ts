import { createHash, randomBytes } from "node:crypto";
import { z } from "zod";
import {
  CertificateRequestError,
  type DeviceCertificateAuthority,
  type IssuedCertificate,
} from "../registry/certificate-authority.js";
import { deviceIdSchema, deviceLimitsSchema, groupSchema, viewOf } from "../registry/device.js";
import { DeviceExistsError, type DeviceRegistry } from "../registry/device-registry.js";
import { MAX_PAGE } from "../registry/device-store.js";
import { revokeCertificates } from "../registry/revocation.js";
import { ApiError, type ApiResponse, type Route, type RouteContext } from "./admin-server.js";
import { openApiDocument } from "./openapi.js";

/** A client connected somewhere in the cluster. */
export interface SessionInfo {
  clientId: string;
  node: string;
  /** When this connection claimed its client id (ISO 8601), where known. */
  connectedAt?: string;
}

/** The cluster's live connections, as the admin API lists and closes them. */
export interface SessionDirectory {
  list(limit: number): Promise<{ sessions: SessionInfo[]; truncated: boolean }>;
  /** Closes the client's connection on whatever node holds it; false when none does. */
  disconnect(clientId: string): Promise<boolean>;
}

export interface AdminApiDeps {
  registry: DeviceRegistry;
  ca: DeviceCertificateAuthority | undefined;
  sessions: SessionDirectory;
  enrollmentTokenSeconds: number;
  deviceCertificateDays: number;
}

const MAX_PEM = 16_384;
const serialSchema = z
  .string()
  .regex(/^[0-9A-Fa-f]{1,40}$/, "must be the certificate serial in hex")
  .transform((serial) => serial.toUpperCase().replace(/^0+(?=.)/, ""));

const createDevice = z.strictObject({
  id: deviceIdSchema,
  groups: z.array(groupSchema).max(64).default([]),
  enabled: z.boolean().default(true),
  limits: deviceLimitsSchema.optional(),
  /** false: a certificate-only device, no password generated. */
  password: z.boolean().default(true),
});
const patchDevice = z
  .strictObject({
    enabled: z.boolean().optional(),
    groups: z.array(groupSchema).max(64).optional(),
    limits: deviceLimitsSchema.nullable().optional(),
  })
  .refine((patch) => Object.keys(patch).length > 0, "nothing to change");
const certificateRequest = z.strictObject({
  csr: z.string().max(MAX_PEM).optional(),
  validityDays: z.number().int().min(1).max(825).optional(),
  /** true (default): the device's other certificates are revoked. */
  replace: z.boolean().default(true),
});
const tokenRequest = z.strictObject({
  ttlSeconds: z
    .number()
    .int()
    .min(60)
    .max(30 * 86_400)
    .optional(),
});
const enrollRequest = z.strictObject({
  id: deviceIdSchema,
  token: z.string().min(16).max(256),
  csr: z.string().max(MAX_PEM).optional(),
});
const revokeRequest = z.strictObject({ serial: serialSchema });

/** The `/api/v1` routes of the device registry, sessions and CA, and `/openapi.json`. */
export function adminRoutes(deps: AdminApiDeps): Route[] {
  const { registry } = deps;
  const requireCa = (): DeviceCertificateAuthority => {
    if (deps.ca === undefined) {
      throw new ApiError(409, "no device CA is configured (admin.ca)");
    }
    return deps.ca;
  };
  const deviceId = (context: RouteContext<unknown>): string => {
    const id = context.params.id as string;
    if (!deviceIdSchema.safeParse(id).success) throw new ApiError(404, "no such device");
    return id;
  };
  /** Issues a certificate to an existing device and records it; the replaced ones are revoked. */
  const issueTo = async (
    id: string,
    request: { csr?: string | undefined; validityDays?: number | undefined; replace: boolean },
  ): Promise<ApiResponse> => {
    const ca = requireCa();
    const before = await registry.get(id);
    if (before === undefined) throw new ApiError(404, "no such device");
    const issued = await ca
      .issue(id, {
        ...(request.csr === undefined ? {} : { csrPem: request.csr }),
        validityDays: request.validityDays ?? deps.deviceCertificateDays,
      })
      .catch((error: unknown) => {
        if (error instanceof CertificateRequestError) throw new ApiError(400, error.message);
        throw error;
      });
    const after = await registry.addCertificate(
      id,
      { serial: issued.serial, notAfter: issued.notAfter.toISOString() },
      request.replace,
    );
    if (after === undefined) throw new ApiError(404, "no such device");
    if (request.replace) {
      const replaced = before.certificates.map((c) => c.serial).filter((s) => s !== issued.serial);
      await revokeCertificates(registry, ca, replaced);
    }
    return { status: 201, body: certificateBody(id, issued, ca) };
  };

  return [
    {
      method: "GET",
      path: "/openapi.json",
      public: true,
      handle: async () => ({ status: 200, body: openApiDocument }),
    },
    {
      method: "GET",
      path: "/api/v1/devices",
      handle: async ({ query }) => {
        const after = query.get("after") ?? undefined;
        const limit = Number(query.get("limit") ?? 100);
        if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) {
          throw new ApiError(400, `limit must be an integer from 1 to ${MAX_PAGE}`);
        }
        const page = await registry.list(after, limit);
        return {
          status: 200,
          body: {
            devices: page.devices.map((record) => viewOf(record)),
            ...(page.next === undefined ? {} : { next: page.next }),
          },
        };
      },
    },
    {
      method: "POST",
      path: "/api/v1/devices",
      body: createDevice,
      handle: async (context) => {
        const input = context.body as z.output<typeof createDevice>;
        try {
          const { record, password } = await registry.create(input);
          return {
            status: 201,
            target: record.id,
            body: {
              id: record.id,
              ...(password === undefined ? {} : { password }),
              device: viewOf(record),
            },
          };
        } catch (error) {
          if (error instanceof DeviceExistsError)
            throw new ApiError(409, "a device with this id exists");
          throw error;
        }
      },
    },
    {
      method: "GET",
      path: "/api/v1/devices/{id}",
      handle: async (context) => {
        const id = deviceId(context);
        const record = await registry.get(id);
        if (record === undefined) throw new ApiError(404, "no such device");
        return { status: 200, body: viewOf(record, await registry.store.lastSeen(id)) };
      },
    },
    {
      method: "PATCH",
      path: "/api/v1/devices/{id}",
      body: patchDevice,
      handle: async (context) => {
        const record = await registry.update(
          deviceId(context),
          context.body as z.output<typeof patchDevice>,
        );
        if (record === undefined) throw new ApiError(404, "no such device");
        return { status: 200, body: viewOf(record) };
      },
    },
    {
      method: "DELETE",
      path: "/api/v1/devices/{id}",
      handle: async (context) => {
        const id = deviceId(context);
        const record = await registry.get(id);
        if (record === undefined || !(await registry.delete(id))) {
          throw new ApiError(404, "no such device");
        }
        // A deleted device's certificates must not work again if its id is reused.
        if (deps.ca !== undefined) {
          await revokeCertificates(
            registry,
            deps.ca,
            record.certificates.map((c) => c.serial),
          );
        }
        return { status: 204 };
      },
    },
    {
      method: "POST",
      path: "/api/v1/devices/{id}/rotate",
      handle: async (context) => {
        const rotated = await registry.rotate(deviceId(context));
        if (rotated === undefined) throw new ApiError(404, "no such device");
        return { status: 200, body: { id: rotated.record.id, password: rotated.password } };
      },
    },
    {
      method: "POST",
      path: "/api/v1/devices/{id}/certificate",
      body: certificateRequest,
      handle: async (context) =>
        issueTo(deviceId(context), context.body as z.output<typeof certificateRequest>),
    },
    {
      method: "POST",
      path: "/api/v1/devices/{id}/enrollment-token",
      body: tokenRequest,
      handle: async (context) => {
        const id = deviceId(context);
        requireCa();
        if ((await registry.get(id)) === undefined) throw new ApiError(404, "no such device");
        const ttl =
          (context.body as z.output<typeof tokenRequest>).ttlSeconds ?? deps.enrollmentTokenSeconds;
        const token = randomBytes(32).toString("base64url");
        await registry.store.saveEnrollmentToken(digestOf(token), id, ttl);
        const expiresAt = new Date(Date.now() + ttl * 1000).toISOString();
        return { status: 201, body: { id, token, expiresAt } };
      },
    },
    {
      method: "POST",
      path: "/api/v1/enroll",
      public: true,
      body: enrollRequest,
      handle: async (context) => {
        const request = context.body as z.output<typeof enrollRequest>;
        requireCa();
        // Used up whatever happens next: a token is good for one attempt.
        const tokenFor = await registry.store.consumeEnrollmentToken(digestOf(request.token));
        const device = tokenFor === request.id ? await registry.get(request.id) : undefined;
        if (device === undefined || !device.enabled) {
          throw new ApiError(403, "enrollment token invalid, used, expired or not for this device");
        }
        const response = await issueTo(request.id, { csr: request.csr, replace: true });
        return { ...response, target: request.id };
      },
    },
    {
      method: "POST",
      path: "/api/v1/certificates/revoke",
      body: revokeRequest,
      handle: async (context) => {
        const { serial } = context.body as z.output<typeof revokeRequest>;
        await revokeCertificates(registry, requireCa(), [serial]);
        return { status: 204, target: serial };
      },
    },
    {
      method: "GET",
      path: "/api/v1/ca/certificate",
      handle: async () => ({
        status: 200,
        text: requireCa().certificatePem,
        contentType: "application/x-pem-file",
      }),
    },
    {
      method: "GET",
      path: "/api/v1/ca/crl",
      handle: async () => {
        requireCa();
        const crl = await registry.store.crl();
        if (crl === undefined) throw new ApiError(404, "nothing revoked yet");
        return { status: 200, text: crl, contentType: "application/x-pem-file" };
      },
    },
    {
      method: "GET",
      path: "/api/v1/sessions",
      handle: async ({ query }) => {
        const limit = Number(query.get("limit") ?? 10_000);
        if (!Number.isInteger(limit) || limit < 1 || limit > 100_000) {
          throw new ApiError(400, "limit must be an integer from 1 to 100000");
        }
        return { status: 200, body: await deps.sessions.list(limit) };
      },
    },
    {
      method: "DELETE",
      path: "/api/v1/sessions/{clientId}",
      handle: async (context) => {
        const clientId = context.params.clientId as string;
        if (clientId.length > 65_535 || !(await deps.sessions.disconnect(clientId))) {
          throw new ApiError(404, "no such connected client");
        }
        return { status: 204 };
      },
    },
  ];
}

function digestOf(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

function certificateBody(id: string, issued: IssuedCertificate, ca: DeviceCertificateAuthority) {
  return {
    id,
    serial: issued.serial,
    notAfter: issued.notAfter.toISOString(),
    certificate: issued.certificatePem,
    ...(issued.privateKeyPem === undefined ? {} : { privateKey: issued.privateKeyPem }),
    ca: ca.certificatePem,
  };
}
