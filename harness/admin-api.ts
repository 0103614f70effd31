import { createHash, randomBytes } from "node:crypto";
import { type RunningNode, startNode } from "./in-process-node.js";

/** A bearer token and the digest a config's `admin.tokens` holds for it. */
export function newAdminToken(): { token: string; digest: string } {
  const token = randomBytes(32).toString("base64url");
  return { token, digest: createHash("sha256").update(token).digest("hex") };
}

export interface ApiReply {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: tests read whatever JSON the API answered.
  json: any;
  text: string;
}

/** Calls the admin API over plain HTTP. `body` is sent as JSON; `raw` as given. */
export async function callApi(
  base: string,
  method: string,
  path: string,
  options: {
    token?: string;
    body?: unknown;
    raw?: string | Buffer;
    headers?: Record<string, string>;
  } = {},
): Promise<ApiReply> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
  let body: string | Buffer | undefined;
  if (options.body !== undefined) {
    body = JSON.stringify(options.body);
    headers["content-type"] ??= "application/json";
  } else if (options.raw !== undefined) {
    body = options.raw;
  }
  const response = await fetch(new URL(path, base), {
    method,
    headers,
    ...(body === undefined ? {} : { body }),
  });
  const text = await response.text();
  let json: unknown;
  try {
    json = text === "" ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, json, text };
}

/** The base URL of an in-process node's admin API. */
export function adminUrlOf(node: RunningNode): string {
  return `http://127.0.0.1:${node.node.addresses.admin?.port}`;
}

/** A node of a registry cluster: Redis under `keyPrefix`, the admin API on, passwords only. */
export function startRegistryNode(
  nodeId: string,
  redisUrl: string,
  keyPrefix: string,
  adminDigest: string,
): Promise<RunningNode> {
  return startNode({
    nodeId,
    auth: { allowAnonymous: false },
    redis: { url: redisUrl, keyPrefix },
    admin: { host: "127.0.0.1", port: 0, tokens: [adminDigest] },
  });
}

/** Calls a node's admin API with a bearer token; `body` is sent as JSON when given. */
export function adminCaller(
  node: () => RunningNode,
  token: string,
): (method: string, path: string, body?: unknown) => Promise<ApiReply> {
  return (method, path, body) =>
    callApi(adminUrlOf(node()), method, path, { token, ...(body === undefined ? {} : { body }) });
}
