import { createHash, timingSafeEqual } from "node:crypto";
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import type { TLSSocket, TlsOptions } from "node:tls";
import {
  type RateLimiterAbstract,
  RateLimiterMemory,
  RateLimiterRedis,
  RateLimiterRes,
} from "rate-limiter-flexible";
import type { z } from "zod";
import { SluiceError } from "../errors.js";
import type { Logger } from "../observability/logger.js";
import type { RedisClient } from "../redis/redis-client.js";
import type { AuditLog } from "../security/audit-log.js";
import {
  capConnectionsPerAddress,
  closeServer,
  HTTP_TIMEOUT_CHECK_MS,
  listenOn,
} from "../transport/server-utils.js";

/** What a handler answers: JSON by default, or text (a PEM) with its content type. */
export interface ApiResponse {
  status: number;
  body?: unknown;
  text?: string;
  contentType?: string;
  /** The device or session acted on, for the audit line. */
  target?: string;
}

/** A refusal with its HTTP status; the message (and details) go to the caller as JSON. */
export class ApiError extends SluiceError {
  constructor(
    readonly status: number,
    message: string,
    readonly details: string[] = [],
  ) {
    super(`HTTP_${status}`, message);
  }
}

export interface RouteContext<Body> {
  /** The path's `{name}` segments, checked against the route's `params` schema. */
  params: Record<string, string>;
  /** The query string parsed by the route's `query` schema; undefined without one. */
  query: unknown;
  body: Body;
  /** Who called: `token:<digest prefix>` or `cert:<CN>`; undefined on public routes. */
  admin: string | undefined;
  remoteAddress: string | undefined;
}

/** A route's answer on success, as the OpenAPI document describes it. */
export interface RouteResponse {
  status: number;
  description: string;
  /** The JSON body's shape; absent: no body, or `contentType` text. */
  schema?: z.ZodType;
  contentType?: string;
}

/**
 * One endpoint. The same entry serves requests and describes them in the OpenAPI document
 * (openapi.ts), so the document cannot drift from what is served or validated.
 */
export interface Route {
  method: "GET" | "POST" | "PATCH" | "DELETE";
  /** e.g. `/api/v1/devices/{id}`; a `{name}` segment matches one URL segment. */
  path: string;
  summary: string;
  /** Reachable without an admin credential (the enrollment endpoint, the OpenAPI document). */
  public?: boolean;
  /** Validates the `{name}` segments; a value it refuses names nothing, so answers 404. */
  params?: z.ZodObject;
  /** Validates the query string (every value a string); without one, the query is ignored. */
  query?: z.ZodObject;
  /** Validates the JSON body; a route without one takes no body. */
  body?: z.ZodType;
  response: RouteResponse;
  handle(context: RouteContext<unknown>): Promise<ApiResponse>;
}

export interface AdminServerSettings {
  host: string;
  port: number;
  /** SHA-256 hex digests of the accepted bearer tokens. */
  tokenDigests: readonly string[];
  maxBodyBytes: number;
  /** HTTPS; with a `ca`, a client certificate verified against it is an admin credential too. */
  tls?: TlsOptions | undefined;
  /** Open connections one client address may hold; further ones are closed on accept. */
  maxConnectionsPerIp: number;
  /**
   * Requests per minute one client address may make without a valid admin credential (the
   * enrollment endpoint, the OpenAPI document, and every refused or unknown call); beyond: 429.
   */
  unauthenticatedRequestsPerMinute: number;
  /** Where the cluster counts those calls, so that every node's port shares one budget. */
  redis?: RedisClient | undefined;
}

interface CompiledRoute {
  route: Route;
  segments: string[];
}

/**
 * The admin API's HTTP listener: its own port, never the metrics one. Every request is
 * authenticated (bearer token compared by digest in constant time, or a verified client
 * certificate), bodies are size-capped JSON validated against a strict schema, and every call
 * leaves an audit line with the admin's identity. Handlers never see unvalidated input.
 * Slow or greedy clients are held off before any of that: open connections are capped per
 * address, timeouts are enforced to the second, and calls without a credential are rate-limited
 * per address.
 */
export class AdminServer {
  private readonly server: Server;
  private readonly routes: CompiledRoute[];
  private readonly digests: Buffer[];
  private readonly unauthenticated: RateLimiterAbstract;

  constructor(
    private readonly settings: AdminServerSettings,
    routes: Route[],
    private readonly audit: AuditLog,
    private readonly log: Logger,
  ) {
    this.routes = routes.map((route) => ({ route, segments: route.path.split("/") }));
    this.digests = settings.tokenDigests.map((hex) => Buffer.from(hex, "hex"));
    const handler = (req: IncomingMessage, res: ServerResponse): void => {
      this.serve(req, res).catch((error: unknown) => {
        this.log.error({ event: "admin.error", err: error }, "admin request failed");
        if (!res.headersSent) sendJson(res, 500, { error: "internal error" });
        else res.destroy();
      });
    };
    const timing = { connectionsCheckingInterval: HTTP_TIMEOUT_CHECK_MS };
    this.server = settings.tls
      ? createHttpsServer(
          {
            ...settings.tls,
            ...timing,
            // A certificate is one credential among two: without one, a token still works.
            requestCert: settings.tls.ca !== undefined,
            rejectUnauthorized: false,
          },
          handler,
        )
      : createHttpServer(timing, handler);
    const perIp = settings.maxConnectionsPerIp;
    capConnectionsPerAddress(this.server, perIp, (ip) =>
      this.log.debug(
        { event: "admin.connection_refused", remoteAddress: ip, perIp },
        "admin connection refused: too many open from this address",
      ),
    );
    this.unauthenticated = unauthenticatedLimiter(
      settings.unauthenticatedRequestsPerMinute,
      settings.redis,
    );
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 30_000;
    this.server.keepAliveTimeout = 5_000;
    this.server.maxHeadersCount = 64;
  }

  listen(): Promise<AddressInfo> {
    return listenOn(this.server, this.settings.host, this.settings.port);
  }

  async close(): Promise<void> {
    await closeServer(this.server);
    this.server.closeAllConnections();
  }

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://admin.invalid");
    const method = req.method ?? "GET";
    const remoteAddress = req.socket.remoteAddress;
    let admin: string | undefined;
    let routePath = url.pathname;
    let target: string | undefined;
    let status = 500;
    try {
      // A wrong credential counts as none: guessing tokens is rate-limited too.
      const caller = this.authenticate(req);
      if (caller === undefined) await this.limitUnauthenticated(remoteAddress ?? "", res);
      const match = this.match(method, url.pathname);
      routePath = match.route.path;
      if (!match.route.public) {
        admin = caller;
        if (admin === undefined) {
          res.setHeader("www-authenticate", 'Bearer realm="sluice-admin"');
          throw new ApiError(401, "missing or invalid credentials");
        }
      }
      // After authentication: an unauthenticated caller learns nothing of which ids are valid.
      if (match.route.params !== undefined && !match.route.params.safeParse(match.params).success) {
        throw new ApiError(404, `no such ${Object.keys(match.params).join(", ")}`);
      }
      const query =
        match.route.query === undefined
          ? undefined
          : parseInput(match.route.query, Object.fromEntries(url.searchParams), "query");
      const body = await readBody(req, match.route, this.settings.maxBodyBytes);
      const response = await match.route.handle({
        params: match.params,
        query,
        body,
        admin,
        remoteAddress,
      });
      status = response.status;
      target = response.target ?? match.params.id ?? match.params.clientId;
      if (response.text !== undefined) {
        res.writeHead(status, {
          "content-type": response.contentType ?? "text/plain",
          "cache-control": "no-store",
        });
        res.end(response.text);
      } else if (response.body === undefined) {
        res.writeHead(status, { "cache-control": "no-store" });
        res.end();
      } else {
        sendJson(res, status, response.body);
      }
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      status = error.status;
      // The client left (or its request timed out, answered by Node itself): nobody to tell.
      if (req.socket.destroyed) return;
      sendJson(res, status, {
        error: error.message,
        ...(error.details.length > 0 ? { details: error.details } : {}),
      });
      // The body was not read to its end: the connection cannot be reused safely.
      if (!req.complete) res.once("finish", () => req.destroy());
    } finally {
      this.audit.adminRequest({ admin, remoteAddress, method, route: routePath, target, status });
    }
  }

  /** Counts a call made without a valid credential against its address; 429 over the limit. */
  private async limitUnauthenticated(address: string, res: ServerResponse): Promise<void> {
    try {
      await this.unauthenticated.consume(address);
    } catch (rejected) {
      if (!(rejected instanceof RateLimiterRes)) throw rejected;
      res.setHeader("retry-after", String(Math.max(1, Math.ceil(rejected.msBeforeNext / 1000))));
      throw new ApiError(429, "too many requests without an admin credential; retry later");
    }
  }

  private match(
    method: string,
    pathname: string,
  ): { route: Route; params: Record<string, string> } {
    const segments = pathname.split("/");
    let pathMatched = false;
    for (const { route, segments: pattern } of this.routes) {
      const params = matchSegments(pattern, segments);
      if (params === undefined) continue;
      pathMatched = true;
      if (route.method === method) return { route, params };
    }
    if (pathMatched) throw new ApiError(405, `method ${method} not allowed here`);
    throw new ApiError(404, "no such endpoint");
  }

  /** The caller's admin identity, or undefined: a verified client certificate, else a token. */
  private authenticate(req: IncomingMessage): string | undefined {
    const socket = req.socket as Partial<TLSSocket>;
    if (socket.authorized === true && typeof socket.getPeerCertificate === "function") {
      const cn = socket.getPeerCertificate().subject?.CN;
      if (typeof cn === "string" && cn !== "") return `cert:${cn}`;
    }
    const header = req.headers.authorization;
    const token = header?.startsWith("Bearer ") ? header.slice(7).trim() : undefined;
    if (token === undefined || token === "" || token.length > 512) return undefined;
    const digest = createHash("sha256").update(token).digest();
    // Every digest is compared, so the time taken tells nothing about which one matched.
    let matched = -1;
    this.digests.forEach((candidate, index) => {
      if (timingSafeEqual(candidate, digest) && matched < 0) matched = index;
    });
    return matched < 0 ? undefined : `token:${digest.toString("hex").slice(0, 8)}`;
  }
}

/**
 * Counts calls without a credential per address: in Redis for a cluster, so that spreading
 * them over the nodes gains nothing (in memory on this node while Redis is away), else in memory.
 */
function unauthenticatedLimiter(
  perMinute: number,
  redis: RedisClient | undefined,
): RateLimiterAbstract {
  const limits = { points: perMinute, duration: 60, keyPrefix: "admin-unauthenticated" };
  if (redis === undefined) return new RateLimiterMemory(limits);
  return new RateLimiterRedis({
    storeClient: redis,
    ...limits,
    insuranceLimiter: new RateLimiterMemory(limits),
    // Straight to the insurance limiter while Redis is away, instead of queueing.
    rejectIfRedisNotReady: true,
  });
}

function matchSegments(
  pattern: readonly string[],
  segments: readonly string[],
): Record<string, string> | undefined {
  if (pattern.length !== segments.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < pattern.length; i++) {
    const expected = pattern[i] as string;
    const actual = segments[i] as string;
    if (expected.startsWith("{") && expected.endsWith("}")) {
      if (actual === "") return undefined;
      try {
        params[expected.slice(1, -1)] = decodeURIComponent(actual);
      } catch {
        throw new ApiError(400, "malformed URL encoding in the path");
      }
    } else if (expected !== actual) {
      return undefined;
    }
  }
  return params;
}

/** Reads and validates a JSON body; routes without a schema take none. */
async function readBody(req: IncomingMessage, route: Route, maxBytes: number): Promise<unknown> {
  const declared = Number(req.headers["content-length"] ?? 0);
  const chunked = req.headers["transfer-encoding"] !== undefined;
  if (route.body === undefined) {
    if (declared > 0 || chunked) throw new ApiError(400, "this endpoint takes no body");
    return undefined;
  }
  if (declared > maxBytes) throw new ApiError(413, `body over ${maxBytes} bytes`);
  // No body at all reads as `{}`, so that endpoints whose fields are all optional need none.
  if (declared === 0 && !chunked) return parseInput(route.body, {}, "body");
  checkContentType(req.headers["content-type"]);
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > maxBytes) throw new ApiError(413, `body over ${maxBytes} bytes`);
      chunks.push(chunk as Buffer);
    }
  } catch (error) {
    if (error instanceof ApiError) throw error;
    // The stream fails only when the client aborts or its request times out: its fault.
    const timedOut =
      (req.socket.errored as NodeJS.ErrnoException | null)?.code === "ERR_HTTP_REQUEST_TIMEOUT";
    throw timedOut
      ? new ApiError(408, "request body not received in time")
      : new ApiError(400, "request body aborted");
  }
  let json: unknown;
  try {
    json = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new ApiError(400, "body is not valid JSON");
  }
  return parseInput(route.body, json, "body");
}

/** JSON in UTF-8 only: a body in another charset would be read wrongly, so it is refused. */
function checkContentType(header: string | undefined): void {
  const [type, ...parameters] = (header ?? "").split(";");
  if (type?.trim().toLowerCase() !== "application/json") {
    throw new ApiError(415, "content-type must be application/json");
  }
  for (const parameter of parameters) {
    const [name, value] = parameter.split("=", 2).map((part) => part.trim().toLowerCase());
    if (name === "charset" && value?.replace(/^"(.*)"$/, "$1") !== "utf-8") {
      throw new ApiError(415, "charset must be utf-8");
    }
  }
}

function parseInput(schema: z.ZodType, input: unknown, what: "body" | "query"): unknown {
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    throw new ApiError(
      400,
      `invalid request ${what}`,
      parsed.error.issues.map((issue) => {
        const where = issue.path.length > 0 ? issue.path.join(".") : `(${what})`;
        if (issue.code === "unrecognized_keys")
          return `${where}: unknown field(s) ${issue.keys.join(", ")}`;
        return `${where}: ${issue.message}`;
      }),
    );
  }
  return parsed.data;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
  });
  res.end(text);
}
