/**
 * The admin API's OpenAPI 3.1 description, served at /openapi.json. Kept by hand beside the
 * routes (admin-api.ts); a test checks that every route is described and nothing else.
 */
const error = { $ref: "#/components/responses/Error" };
const idParam = { $ref: "#/components/parameters/DeviceId" };
const json = (schema: object) => ({ content: { "application/json": { schema } } });
const pem = { content: { "application/x-pem-file": { schema: { type: "string" } } } };
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });

export const openApiDocument = {
  openapi: "3.1.0",
  info: {
    title: "Sluice admin API",
    version: "1",
    description:
      "Device registry, certificates and sessions of a Sluice cluster. Every call but /api/v1/enroll and this document needs `Authorization: Bearer <token>` (config admin.tokens holds SHA-256 digests) or a client certificate verified by admin.tls.ca.",
  },
  components: {
    securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
    parameters: {
      DeviceId: {
        name: "id",
        in: "path",
        required: true,
        schema: { type: "string", pattern: "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$" },
      },
    },
    responses: {
      Error: {
        description:
          "Refused: 400 invalid input, 401 no credential, 404 unknown, 409 conflict, 413 body too large, 415 not JSON",
        ...json({
          type: "object",
          required: ["error"],
          properties: {
            error: { type: "string" },
            details: { type: "array", items: { type: "string" } },
          },
        }),
      },
    },
    schemas: {
      Limits: {
        type: "object",
        additionalProperties: false,
        properties: {
          messagesPerSecond: { type: "number", exclusiveMinimum: 0 },
          bytesPerSecond: { type: "integer", minimum: 1 },
        },
      },
      Device: {
        type: "object",
        required: [
          "id",
          "enabled",
          "hasPassword",
          "certificates",
          "groups",
          "createdAt",
          "rotatedAt",
          "updatedAt",
        ],
        properties: {
          id: { type: "string" },
          enabled: { type: "boolean" },
          hasPassword: { type: "boolean" },
          certificates: {
            type: "array",
            items: {
              type: "object",
              properties: { serial: { type: "string" }, notAfter: { type: "string" } },
            },
          },
          groups: { type: "array", items: { type: "string" } },
          limits: ref("Limits"),
          createdAt: { type: "string", format: "date-time" },
          rotatedAt: { type: "string", format: "date-time" },
          updatedAt: { type: "string", format: "date-time" },
          lastSeenAt: { type: "string", format: "date-time" },
        },
      },
      Certificate: {
        type: "object",
        required: ["id", "serial", "notAfter", "certificate", "ca"],
        properties: {
          id: { type: "string" },
          serial: { type: "string" },
          notAfter: { type: "string", format: "date-time" },
          certificate: { type: "string", description: "PEM" },
          privateKey: {
            type: "string",
            description: "PEM (PKCS#8), only when no CSR was sent; shown once",
          },
          ca: { type: "string", description: "PEM of the CA to trust" },
        },
      },
    },
  },
  security: [{ bearer: [] }],
  paths: {
    "/api/v1/devices": {
      get: {
        summary: "List devices in id order",
        parameters: [
          { name: "after", in: "query", schema: { type: "string" } },
          {
            name: "limit",
            in: "query",
            schema: { type: "integer", minimum: 1, maximum: 1000, default: 100 },
          },
        ],
        responses: {
          200: {
            description: "A page",
            ...json({
              type: "object",
              properties: {
                devices: { type: "array", items: ref("Device") },
                next: { type: "string" },
              },
            }),
          },
          default: error,
        },
      },
      post: {
        summary: "Create a device; the generated password is returned this once",
        requestBody: json({
          type: "object",
          required: ["id"],
          additionalProperties: false,
          properties: {
            id: { type: "string" },
            groups: { type: "array", items: { type: "string" } },
            enabled: { type: "boolean", default: true },
            limits: ref("Limits"),
            password: {
              type: "boolean",
              default: true,
              description: "false: certificate-only device",
            },
          },
        }),
        responses: {
          201: {
            description: "Created",
            ...json({
              type: "object",
              required: ["id"],
              properties: {
                id: { type: "string" },
                password: { type: "string" },
                device: ref("Device"),
              },
            }),
          },
          default: error,
        },
      },
    },
    "/api/v1/devices/{id}": {
      parameters: [idParam],
      get: {
        summary: "A device",
        responses: { 200: { description: "The device", ...json(ref("Device")) }, default: error },
      },
      patch: {
        summary: "Enable, disable, regroup or re-limit a device; disabling closes its connections",
        requestBody: json({
          type: "object",
          additionalProperties: false,
          minProperties: 1,
          properties: {
            enabled: { type: "boolean" },
            groups: { type: "array", items: { type: "string" } },
            limits: { oneOf: [ref("Limits"), { type: "null" }] },
          },
        }),
        responses: { 200: { description: "Changed", ...json(ref("Device")) }, default: error },
      },
      delete: {
        summary: "Delete a device, close its connections and revoke its certificates",
        responses: { 204: { description: "Deleted" }, default: error },
      },
    },
    "/api/v1/devices/{id}/rotate": {
      parameters: [idParam],
      post: {
        summary:
          "Replace the password (returned this once); connections made with the old one are closed",
        responses: {
          200: {
            description: "Rotated",
            ...json({
              type: "object",
              properties: { id: { type: "string" }, password: { type: "string" } },
            }),
          },
          default: error,
        },
      },
    },
    "/api/v1/devices/{id}/certificate": {
      parameters: [idParam],
      post: {
        summary: "Issue a client certificate (CN = device id) from a CSR, or with a new key pair",
        requestBody: json({
          type: "object",
          additionalProperties: false,
          properties: {
            csr: {
              type: "string",
              description: "PEM PKCS#10; its subject CN must be the device id",
            },
            validityDays: { type: "integer", minimum: 1, maximum: 825 },
            replace: {
              type: "boolean",
              default: true,
              description: "revoke the device's other certificates",
            },
          },
        }),
        responses: { 201: { description: "Issued", ...json(ref("Certificate")) }, default: error },
      },
    },
    "/api/v1/devices/{id}/enrollment-token": {
      parameters: [idParam],
      post: {
        summary:
          "A one-time token with which the device fetches its certificate from /api/v1/enroll",
        requestBody: json({
          type: "object",
          additionalProperties: false,
          properties: { ttlSeconds: { type: "integer", minimum: 60, maximum: 2592000 } },
        }),
        responses: {
          201: {
            description: "Token (shown once)",
            ...json({
              type: "object",
              properties: {
                id: { type: "string" },
                token: { type: "string" },
                expiresAt: { type: "string" },
              },
            }),
          },
          default: error,
        },
      },
    },
    "/api/v1/enroll": {
      post: {
        summary:
          "Device enrollment: exchange a one-time token for a certificate (no admin credential)",
        security: [],
        requestBody: json({
          type: "object",
          required: ["id", "token"],
          additionalProperties: false,
          properties: {
            id: { type: "string" },
            token: { type: "string" },
            csr: { type: "string" },
          },
        }),
        responses: { 201: { description: "Issued", ...json(ref("Certificate")) }, default: error },
      },
    },
    "/api/v1/certificates/revoke": {
      post: {
        summary: "Revoke a certificate by serial; every node's TLS listeners load the new CRL",
        requestBody: json({
          type: "object",
          required: ["serial"],
          additionalProperties: false,
          properties: { serial: { type: "string" } },
        }),
        responses: { 204: { description: "Revoked" }, default: error },
      },
    },
    "/api/v1/ca/certificate": {
      get: {
        summary: "The device CA's certificate",
        responses: { 200: { description: "PEM", ...pem }, default: error },
      },
    },
    "/api/v1/ca/crl": {
      get: {
        summary: "The device CA's current CRL",
        responses: { 200: { description: "PEM", ...pem }, default: error },
      },
    },
    "/api/v1/sessions": {
      get: {
        summary: "Clients connected anywhere in the cluster",
        parameters: [
          {
            name: "limit",
            in: "query",
            schema: { type: "integer", minimum: 1, maximum: 100000, default: 10000 },
          },
        ],
        responses: {
          200: {
            description: "Sessions",
            ...json({
              type: "object",
              properties: {
                sessions: {
                  type: "array",
                  items: {
                    type: "object",
                    properties: {
                      clientId: { type: "string" },
                      node: { type: "string" },
                      connectedAt: { type: "string" },
                    },
                  },
                },
                truncated: { type: "boolean" },
              },
            }),
          },
          default: error,
        },
      },
    },
    "/api/v1/sessions/{clientId}": {
      parameters: [{ name: "clientId", in: "path", required: true, schema: { type: "string" } }],
      delete: {
        summary: "Disconnect a client on whatever node holds it",
        responses: { 204: { description: "Disconnected" }, default: error },
      },
    },
    "/openapi.json": {
      get: {
        summary: "This document",
        security: [],
        responses: { 200: { description: "OpenAPI 3.1" } },
      },
    },
  },
} as const;
