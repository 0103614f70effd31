import { z } from "zod";
import { apiErrorBody } from "./admin-schemas.js";
import type { Route } from "./admin-server.js";

type JsonSchema = Record<string, unknown>;

export interface OpenApiDocument {
  openapi: "3.1.0";
  info: { title: string; version: string; description: string };
  components: Record<string, unknown>;
  security: Array<Record<string, string[]>>;
  /** path -> lower-case method -> operation */
  paths: Record<string, Record<string, unknown>>;
}

/**
 * The admin API's OpenAPI 3.1 description, served at /openapi.json, generated from the route
 * table: each route's path, method, summary, the zod schemas that validate its parameters and
 * body, and the answer it describes. OpenAPI 3.1 schemas are JSON Schema 2020-12, which is what
 * `z.toJSONSchema` writes.
 */
export function openApiDocument(routes: readonly Route[]): OpenApiDocument {
  const paths: OpenApiDocument["paths"] = {};
  for (const route of routes) {
    paths[route.path] ??= {};
    (paths[route.path] as Record<string, unknown>)[route.method.toLowerCase()] = operation(route);
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "Sluice admin API",
      version: "1",
      description:
        "Device registry, certificates and sessions of a Sluice cluster. Every call but /api/v1/enroll and this document needs `Authorization: Bearer <token>` (config admin.tokens holds SHA-256 digests) or a client certificate verified by admin.tls.ca. Calls without a valid credential are rate-limited per client address (admin.unauthenticatedRequestsPerMinute): 429 with Retry-After beyond it.",
    },
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      responses: {
        Error: {
          description:
            "Refused: 400 invalid input, 401 no credential, 404 unknown, 408 body too slow, 409 conflict, 413 body too large, 415 not JSON in UTF-8, 429 too many calls without a credential",
          content: { "application/json": { schema: jsonSchema(apiErrorBody, "output") } },
        },
      },
    },
    security: [{ bearer: [] }],
    paths,
  };
}

function operation(route: Route): Record<string, unknown> {
  const { response } = route;
  const parameters = [...pathParameters(route), ...objectParameters(route.query, "query")];
  let content: Record<string, unknown> | undefined;
  if (response.schema !== undefined) {
    content = { "application/json": { schema: jsonSchema(response.schema, "output") } };
  } else if (response.contentType !== undefined) {
    content = { [response.contentType]: { schema: { type: "string" } } };
  }
  return {
    summary: route.summary,
    ...(route.public ? { security: [] } : {}),
    ...(parameters.length > 0 ? { parameters } : {}),
    ...(route.body === undefined ? {} : { requestBody: requestBody(route.body) }),
    responses: {
      [response.status]: {
        description: response.description,
        ...(content === undefined ? {} : { content }),
      },
      default: { $ref: "#/components/responses/Error" },
    },
  };
}

/** Every `{name}` of the path, with its schema from the route's `params` where it has one. */
function pathParameters(route: Route): JsonSchema[] {
  const names = [...route.path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1] as string);
  const described = objectParameters(route.params, "path");
  return names.map(
    (name) =>
      described.find((p) => p.name === name) ?? {
        name,
        in: "path",
        required: true,
        schema: { type: "string" },
      },
  );
}

function objectParameters(schema: z.ZodObject | undefined, where: "path" | "query"): JsonSchema[] {
  if (schema === undefined) return [];
  const object = jsonSchema(schema, "input");
  const properties = (object.properties ?? {}) as Record<string, JsonSchema>;
  const required = new Set((object.required ?? []) as string[]);
  return Object.entries(properties).map(([name, property]) => {
    const { description, ...rest } = property;
    return {
      name,
      in: where,
      required: where === "path" || required.has(name),
      ...(description === undefined ? {} : { description }),
      schema: rest,
    };
  });
}

function requestBody(schema: z.ZodType): JsonSchema {
  const body = jsonSchema(schema, "input");
  const required = Array.isArray(body.required) && body.required.length > 0;
  return { required, content: { "application/json": { schema: body } } };
}

/** What a request may send (`input`: defaults make fields optional) or an answer holds. */
function jsonSchema(schema: z.ZodType, io: "input" | "output"): JsonSchema {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, {
    io,
    // A refinement or transform checks more than JSON Schema can say; its base type is described.
    unrepresentable: "any",
  }) as JsonSchema;
  return rest;
}
