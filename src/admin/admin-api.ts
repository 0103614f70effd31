import { createHash, randomBytes } from "node:crypto";
import type { z } from "zod";
import type { SessionDirectory } from "../cluster/session-directory.js";
import { viewOf } from "../registry/device.js";
import {
  CertificateRequestError,
  type DeviceCertificateAuthority,
  type IssuedCertificate,
} from "../registry/device-certificate-authority.js";
import { DeviceExistsError, type DeviceRegistry } from "../registry/device-registry.js";
import { revokeCertificates } from "../registry/revocation.js";
import type { AuditLog } from "../security/audit-log.js";
import {
  certificateRequest,
  createDevice,
  createdDevice,
  deviceListQuery,
  devicePage,
  deviceParams,
  deviceView,
  enrollmentToken,
  enrollRequest,
  issuedCertificate,
  patchDevice,
  revokeRequest,
  rotateDevice,
  rotatedPassword,
  sessionList,
  sessionListQuery,
  sessionParams,
  tokenRequest,
} from "./admin-schemas.js";
import { ApiError, type ApiResponse, type Route, type RouteContext } from "./admin-server.js";
import { type OpenApiDocument, openApiDocument } from "./openapi.js";

export interface AdminApiDeps {
  registry: DeviceRegistry;
  ca: DeviceCertificateAuthority | undefined;
  sessions: SessionDirectory;
  enrollmentTokenSeconds: number;
  deviceCertificateDays: number;
  /** The users of the password file in force (it can be reloaded); undefined without one. */
  passwordUsers: () => { has(username: string): boolean } | undefined;
  audit: AuditLog;
}

const PEM = "application/x-pem-file";

/** The `/api/v1` routes of the device registry, sessions and CA, and `/openapi.json`. */
export function adminRoutes(deps: AdminApiDeps): Route[] {
  const { registry } = deps;
  const requireCa = (): DeviceCertificateAuthority => {
    if (deps.ca === undefined) {
      throw new ApiError(409, "no device CA is configured (admin.ca)");
    }
    return deps.ca;
  };
  /** The `{id}` of a route, already checked against deviceParams. */
  const deviceId = (context: RouteContext<unknown>): string => context.params.id as string;
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

  /** Refuses a device named like a password file user unless the caller says it takes over. */
  const checkPasswordUserClash = (
    context: RouteContext<unknown>,
    input: z.output<typeof createDevice>,
  ): void => {
    if (deps.passwordUsers()?.has(input.id) !== true) return;
    deps.audit.passwordUserClash({
      admin: context.admin,
      remoteAddress: context.remoteAddress,
      device: input.id,
      replaced: input.replacesPasswordUser,
    });
    if (!input.replacesPasswordUser) {
      throw new ApiError(
        409,
        `"${input.id}" is a user of the password file (auth.passwordFile); a device of that name would take it over: send replacesPasswordUser: true to mean that`,
      );
    }
  };

  let document: OpenApiDocument | undefined;
  const routes: Route[] = [
    {
      method: "GET",
      path: "/openapi.json",
      summary: "This document",
      public: true,
      response: { status: 200, description: "OpenAPI 3.1" },
      handle: async () => {
        document ??= openApiDocument(routes);
        return { status: 200, body: document };
      },
    },
    {
      method: "GET",
      path: "/api/v1/devices",
      summary: "List devices in id order",
      query: deviceListQuery,
      response: { status: 200, description: "A page", schema: devicePage },
      handle: async (context) => {
        const { after, limit } = context.query as z.output<typeof deviceListQuery>;
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
      summary: "Create a device; the generated password is returned this once",
      body: createDevice,
      response: { status: 201, description: "Created", schema: createdDevice },
      handle: async (context) => {
        const input = context.body as z.output<typeof createDevice>;
        checkPasswordUserClash(context, input);
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
      summary: "A device",
      params: deviceParams,
      response: { status: 200, description: "The device", schema: deviceView },
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
      summary: "Enable, disable, regroup or re-limit a device; disabling closes its connections",
      params: deviceParams,
      body: patchDevice,
      response: { status: 200, description: "Changed", schema: deviceView },
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
      summary: "Delete a device, close its connections and revoke its certificates",
      params: deviceParams,
      response: { status: 204, description: "Deleted" },
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
      summary:
        "Replace the password (returned this once) or set a SCRAM verifier; connections made with the old one are closed",
      params: deviceParams,
      body: rotateDevice,
      response: { status: 200, description: "Rotated", schema: rotatedPassword },
      handle: async (context) => {
        const rotated = await registry.rotate(
          deviceId(context),
          context.body as z.output<typeof rotateDevice>,
        );
        if (rotated === undefined) throw new ApiError(404, "no such device");
        const { password } = rotated;
        return {
          status: 200,
          body: { id: rotated.record.id, ...(password === undefined ? {} : { password }) },
        };
      },
    },
    {
      method: "POST",
      path: "/api/v1/devices/{id}/certificate",
      summary: "Issue a client certificate (CN = device id) from a CSR, or with a new key pair",
      params: deviceParams,
      body: certificateRequest,
      response: { status: 201, description: "Issued", schema: issuedCertificate },
      handle: async (context) =>
        issueTo(deviceId(context), context.body as z.output<typeof certificateRequest>),
    },
    {
      method: "POST",
      path: "/api/v1/devices/{id}/enrollment-token",
      summary: "A one-time token with which the device fetches its certificate from /api/v1/enroll",
      params: deviceParams,
      body: tokenRequest,
      response: { status: 201, description: "Token (shown once)", schema: enrollmentToken },
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
      summary:
        "Device enrollment: exchange a one-time token for a certificate (no admin credential)",
      public: true,
      body: enrollRequest,
      response: { status: 201, description: "Issued", schema: issuedCertificate },
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
      summary: "Revoke a certificate by serial; every node's TLS listeners load the new CRL",
      body: revokeRequest,
      response: { status: 204, description: "Revoked" },
      handle: async (context) => {
        const { serial } = context.body as z.output<typeof revokeRequest>;
        await revokeCertificates(registry, requireCa(), [serial]);
        return { status: 204, target: serial };
      },
    },
    {
      method: "GET",
      path: "/api/v1/ca/certificate",
      summary: "The device CA's certificate",
      response: { status: 200, description: "PEM", contentType: PEM },
      handle: async () => ({
        status: 200,
        text: requireCa().certificatePem,
        contentType: PEM,
      }),
    },
    {
      method: "GET",
      path: "/api/v1/ca/crl",
      summary: "The device CA's current CRL",
      response: { status: 200, description: "PEM", contentType: PEM },
      handle: async () => {
        requireCa();
        const crl = await registry.store.crl();
        if (crl === undefined) throw new ApiError(404, "nothing revoked yet");
        return { status: 200, text: crl, contentType: PEM };
      },
    },
    {
      method: "GET",
      path: "/api/v1/sessions",
      summary: "Clients connected anywhere in the cluster",
      query: sessionListQuery,
      response: { status: 200, description: "Sessions", schema: sessionList },
      handle: async (context) => {
        const { limit } = context.query as z.output<typeof sessionListQuery>;
        return { status: 200, body: await deps.sessions.list(limit) };
      },
    },
    {
      method: "DELETE",
      path: "/api/v1/sessions/{clientId}",
      summary: "Disconnect a client on whatever node holds it",
      params: sessionParams,
      response: { status: 204, description: "Disconnected" },
      handle: async (context) => {
        if (!(await deps.sessions.disconnect(context.params.clientId as string))) {
          throw new ApiError(404, "no such connected client");
        }
        return { status: 204 };
      },
    },
  ];
  return routes;
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
