import { visitFiles } from "./file-keys.js";
import { FILE_KEYS, isTlsListener, type SluiceConfig } from "./schema.js";

const WILDCARD_HOSTS = new Set(["0.0.0.0", "::", "[::]"]);

export interface CheckConfigDeps {
  fileExists(path: string): boolean;
}

/** Checks that need the whole config or the file system; returns one line per problem. */
export function checkConfig(config: SluiceConfig, deps: CheckConfigDeps): string[] {
  const problems: string[] = [];
  const bound: Array<{ key: string; host: string; port: number }> = [];

  const claim = (key: string, host: string, port: number): void => {
    if (port === 0) return; // an ephemeral port never collides
    const clash = bound.find(
      (b) =>
        b.port === port &&
        (b.host === host || WILDCARD_HOSTS.has(b.host) || WILDCARD_HOSTS.has(host)),
    );
    if (clash) problems.push(`${key}: port ${port} is already used by ${clash.key}`);
    else bound.push({ key, host, port });
  };

  config.listeners.forEach((listener, i) => {
    const key = `listeners[${i}]`;
    claim(`${key}.port`, listener.host, listener.port);
    // Without trusted proxies every header would be refused, and so every connection.
    if (
      "proxyProtocol" in listener &&
      listener.proxyProtocol &&
      listener.trustedProxies.length === 0
    )
      problems.push(`${key}.trustedProxies: required with proxyProtocol`);
    if (isTlsListener(listener)) {
      if (listener.requireClientCert && listener.ca === undefined) {
        problems.push(
          `${key}.ca: required when requireClientCert is true (client certificates must chain to it)`,
        );
      }
      if (listener.requireClientCert && !listener.requestCert) {
        problems.push(`${key}.requestCert: must be true when requireClientCert is true`);
      }
    }
  });
  claim("http.port", config.http.host, config.http.port);
  if (config.admin) claim("admin.port", config.admin.host, config.admin.port);

  for (const { key, path, use } of visitFiles(config, FILE_KEYS)) {
    if (use === "read" && !deps.fileExists(path))
      problems.push(`${key}: file not found or not readable: ${path}`);
  }

  const redis = config.redis;
  if (redis) {
    const forms = [
      redis.url !== undefined && "url",
      redis.sentinels !== undefined && "sentinels",
      redis.cluster !== undefined && "cluster",
    ].filter((form) => form !== false);
    if (forms.length === 0) problems.push("redis: needs url, or sentinels and name, or cluster");
    if (forms.length > 1)
      problems.push(`redis: give only one of url, sentinels or cluster (got ${forms.join(", ")})`);
    if (redis.sentinels && redis.name === undefined)
      problems.push("redis.name: required with sentinels");
    if (redis.cluster?.length === 0) problems.push("redis.cluster: needs at least one node");
    if (redis.cluster !== undefined && (redis.replicaAcks.replicas ?? 0) > 0)
      problems.push("redis.replicaAcks.replicas: not supported on a Redis Cluster");
    const tls = redis.tls;
    if (tls && (tls.cert === undefined) !== (tls.key === undefined))
      problems.push("redis.tls: cert and key go together");
  }

  const admin = config.admin;
  if (admin) {
    if (config.redis === undefined && config.registry === undefined) {
      problems.push(
        "registry.file: required with admin on a node without redis (where the device registry is kept)",
      );
    }
    // Bearer tokens travel in the clear without TLS: only acceptable on loopback.
    if (admin.tls === undefined && !isLoopbackHost(admin.host)) {
      problems.push(
        `admin.tls: required when admin.host (${admin.host}) is not a loopback address`,
      );
    }
  }

  const { maxInflight, maxQueuedPerClient } = config.limits.queue;
  // A stored queue holds the deliveries in flight too: a cap under the window would drop
  // messages the client is about to acknowledge.
  if (maxQueuedPerClient < maxInflight) {
    problems.push(
      `limits.queue.maxQueuedPerClient: must be at least limits.queue.maxInflight (${maxInflight})`,
    );
  }
  return problems;
}

function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || host.startsWith("127.");
}
