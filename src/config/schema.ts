import { z } from "zod";
import { publishLimitsSchema } from "../limits/publish-limits-schema.js";
import { parseCidr } from "./cidr.js";

/**
 * The single source of truth for Sluice's configuration: types, defaults and validation.
 * Key names are part of the public contract (../shared/DESIGN.md); extend, never rename.
 */

const port = z
  .number()
  .int()
  .min(0, "must be a port between 0 and 65535")
  .max(65535, "must be a port between 0 and 65535");
const host = z.string().min(1, "must not be empty");
const filePath = z.string().min(1, "must be a file path");
const cidr = z
  .string()
  .refine(
    (text) => parseCidr(text) !== undefined,
    "must be an IP address or CIDR, e.g. 10.0.0.0/8",
  );
const positiveInt = z.number().int().positive();

/**
 * TCP_NODELAY on client sockets: each packet leaves at once (a command reaches its PLC without
 * waiting for Nagle's algorithm), at the cost of more, smaller segments; false batches small
 * writes, which carries about 1.25x the QoS 1 throughput of small messages here (README,
 * Performance) but can hold a lone packet back until the previous one is acknowledged.
 */
const noDelay = z.boolean().default(true);

const tcpListener = z.strictObject({
  type: z.literal("tcp"),
  host: host.default("0.0.0.0"),
  port: port.default(1883),
  proxyProtocol: z.boolean().default(false),
  trustedProxies: z.array(cidr).default([]),
  noDelay,
});

/** TLS material and client-certificate policy shared by `tls` and `wss`. */
const tlsOptions = {
  cert: filePath,
  key: filePath,
  /** Passphrase of an encrypted private key. A secret: redacted in output. */
  passphrase: z.string().optional(),
  /** CA bundle that client certificates must chain to. */
  ca: filePath.optional(),
  /** Certificate revocation list (PEM) checked against client certificates. */
  crl: filePath.optional(),
  /**
   * Also check client certificates against the device CA's CRL kept in the registry (see
   * `admin.ca`), reloaded on every node when a certificate is revoked. Once there is one,
   * OpenSSL wants a CRL for every CA in `ca`: use it on listeners whose `ca` is the device CA.
   */
  registryCrl: z.boolean().default(false),
  requestCert: z.boolean().default(false),
  requireClientCert: z.boolean().default(false),
  minVersion: z.enum(["TLSv1.2", "TLSv1.3"]).default("TLSv1.2"),
  ciphers: z.string().min(1).optional(),
};

const tlsListener = z.strictObject({
  type: z.literal("tls"),
  host: host.default("0.0.0.0"),
  port: port.default(8883),
  proxyProtocol: z.boolean().default(false),
  trustedProxies: z.array(cidr).default([]),
  noDelay,
  ...tlsOptions,
});

const wsPath = z.string().regex(/^\/[^\s?#]*$/, "must be an absolute URL path such as /mqtt");

const wsListener = z.strictObject({
  type: z.literal("ws"),
  host: host.default("0.0.0.0"),
  port: port.default(8080),
  path: wsPath.default("/mqtt"),
  trustedProxies: z.array(cidr).default([]),
});

const wssListener = z.strictObject({
  type: z.literal("wss"),
  host: host.default("0.0.0.0"),
  port: port.default(8443),
  path: wsPath.default("/mqtt"),
  trustedProxies: z.array(cidr).default([]),
  ...tlsOptions,
});

export const listenerSchema = z.discriminatedUnion("type", [
  tcpListener,
  tlsListener,
  wsListener,
  wssListener,
]);

const redisSchema = z.strictObject({
  url: z
    .string()
    .regex(/^rediss?:\/\//, "must be a redis:// or rediss:// URL")
    .optional(),
  sentinels: z.array(z.strictObject({ host, port })).optional(),
  name: z.string().min(1).optional(),
  username: z.string().optional(),
  password: z.string().optional(),
  sentinelPassword: z.string().optional(),
  cluster: z.array(z.strictObject({ host, port })).optional(),
  /**
   * TLS to Redis: on with a rediss:// URL, or with this block (any form). `ca` verifies Redis'
   * certificate (default: the system's CAs); `cert` and `key` authenticate Sluice to it.
   */
  tls: z
    .strictObject({
      ca: filePath.optional(),
      cert: filePath.optional(),
      key: filePath.optional(),
    })
    .optional(),
  keyPrefix: z.string().default("sluice:"),
  /** How long a node's claim on its id outlives the node (a crashed node's id is free after it). */
  nodeLeaseSeconds: z.number().min(1).max(300).default(15),
  /**
   * How often a node tells the others it lives. A node silent for 3 of these is dead, and its
   * clients' wills go out 3 to 7 of these after its crash.
   */
  heartbeatMs: z.number().int().min(100).max(60_000).default(1_000),
});

const authSchema = z.strictObject({
  allowAnonymous: z.boolean().optional(),
  passwordFile: filePath.optional(),
  certificateIdentity: z.enum(["none", "cn-is-clientid", "cn-is-username"]).default("none"),
  clientIdPattern: z.string().min(1).optional(),
});

const limitsSchema = z.strictObject({
  maxPacketBytes: z.number().int().min(64).max(268_435_455).default(262_144),
  /**
   * Longest topic (UTF-8 bytes) in a PUBLISH, a SUBSCRIBE or UNSUBSCRIBE filter, or a will.
   * MQTT allows 65,535. The default is 16 times AWS IoT Core's hard limit of 256 bytes: no
   * device topic comes near it, and it keeps one topic's share of subscription tries, retained
   * keys and queued messages in Redis small.
   */
  maxTopicBytes: z
    .number()
    .int()
    .min(1, "must be at least 1 (bytes)")
    .max(65_535, "must be at most 65535, the longest topic MQTT can carry")
    .default(4_096),
  connectTimeoutMs: z.number().int().min(100).max(600_000).default(5_000),
  /**
   * Longest keep-alive a client may ask for, in seconds; 0 (no keep-alive) is refused too.
   * Without keep-alive a silent connection is never timed out, so a client could hold its
   * per-address quota forever. MQTT 3.1.1 cannot tell a client to use a shorter one, so it
   * gets CONNACK 2, as Mosquitto's max_keepalive does. Absent: any.
   */
  maxKeepaliveSeconds: z.number().int().min(1).max(65_535).optional(),
  /** Connection quotas. Absent ones are unlimited, except a node's own total. */
  connections: z
    .strictObject({
      /** Open connections on this node. */
      perNode: positiveInt.default(100_000),
      /** Open connections from one client address, on this node. */
      perIp: positiveInt.optional(),
      /** Open connections of one username, across the cluster. */
      perUsername: positiveInt.optional(),
      /** New connections per second from one client address (a token bucket: this burst). */
      ratePerIp: positiveInt.optional(),
      /** Open connections across the cluster (each node's count, kept in Redis). */
      cluster: positiveInt.optional(),
    })
    .prefault({}),
  /**
   * A client id that connects more than `maxConnects` times within `windowSeconds` is refused
   * for `banSeconds` (across the cluster). Absent: off.
   */
  flapping: z
    .strictObject({
      maxConnects: positiveInt.default(15),
      windowSeconds: positiveInt.default(60),
      banSeconds: positiveInt.default(300),
    })
    .optional(),
  /**
   * The node refuses new clients (CONNACK 3, /readyz 503) while its event loop lags or its
   * heap is nearly full, and takes them again once both are back under for `recoverMs`.
   */
  overload: z
    .strictObject({
      /** The longest event-loop delay within a 1 s window. */
      eventLoopDelayMs: z.number().int().min(10).max(60_000).default(2_000),
      /** Heap used over the heap's limit (V8's --max-old-space-size). */
      heapUsedRatio: z.number().gt(0).max(1).default(0.9),
      recoverMs: z.number().int().min(0).max(600_000).default(2_000),
    })
    .prefault({}),
  /** Per-identity publish rate limits; absent: none. Keys and defaults: limits/publish-limits-schema.ts */
  publish: publishLimitsSchema.optional(),
  subscriptions: z
    .strictObject({
      perClient: positiveInt.optional(),
      /** aedes hard-caps topic depth at 100 (its matcher's limit). */
      maxTopicLevels: z.number().int().min(1).max(100).default(100),
    })
    .prefault({}),
  /**
   * Brute-force protection, on by default. Failures lock out a source address, or one username
   * from one source address: never a username for every source unless `acrossSources.block`
   * says so, since anyone who knows a device's name could then keep it offline.
   */
  authFailures: z
    .strictObject({
      perIp: positiveInt
        .default(10)
        .describe("Failed logins from one source address before that address is locked out."),
      perUsername: positiveInt
        .default(5)
        .describe(
          "Failed logins for one username from one source address before that username is locked out from that address (other addresses are unaffected).",
        ),
      blockSeconds: positiveInt
        .default(300)
        .describe("How long a lockout lasts, and the window failures are counted in."),
      acrossSources: z
        .strictObject({
          alertAfter: positiveInt
            .default(50)
            .describe(
              "Failed logins for one username summed over every source address (within blockSeconds) that raise an audit line and sluice_auth_username_targeted_total.",
            ),
          block: z
            .boolean()
            .default(false)
            .describe(
              "Also lock that username out for every source address once alertAfter is reached. Off by default: it lets anyone who knows a username keep that device offline.",
            ),
        })
        .prefault({})
        .describe("Guessing spread over many addresses against one username."),
    })
    .prefault({}),
  queue: z
    .strictObject({
      /**
       * QoS 1/2 deliveries written to a client and not yet acknowledged; further ones wait.
       * At most 65,535: a delivery in flight holds a packet identifier [MQTT-2.3.1-4].
       */
      maxInflight: z
        .number()
        .int()
        .min(1, "must be at least 1")
        .max(65_535, "must be at most 65535 (the packet identifiers a client can have in flight)")
        .default(100),
      /**
       * QoS 1/2 messages held for one client: its stored queue (offline, or waiting) and the
       * deliveries waiting for its window. Past it the oldest are dropped and counted.
       */
      maxQueuedPerClient: z
        .number()
        .int()
        .min(1, "must be at least 1")
        .max(10_000_000, "must be at most 10000000")
        .default(10_000),
      /**
       * A subscriber whose socket takes nothing for this long is disconnected (a persistent
       * session keeps its queue).
       */
      drainTimeoutMs: z.number().int().min(100).max(600_000).default(10_000),
      /**
       * QoS 0 to a client is dropped (and counted) while its socket's kernel buffer is full and
       * at least this many bytes wait in the node's memory behind it.
       */
      maxBufferedBytes: z
        .number()
        .int()
        .min(16_384, "must be at least 16384")
        .max(67_108_864, "must be at most 67108864")
        .default(262_144),
    })
    .prefault({}),
});

const nodeId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, "must be 1-128 characters of A-Z a-z 0-9 . _ -");

export const configSchema = z.strictObject({
  nodeId: nodeId.optional(),
  listeners: z
    .array(listenerSchema)
    .min(1, "at least one listener is required")
    .prefault([{ type: "tcp" }]),
  http: z
    .strictObject({
      host: host.default("127.0.0.1"),
      port: port.default(9100),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
      /** auto: human-readable on a terminal, JSON lines otherwise. */
      format: z.enum(["auto", "json", "pretty"]).default("auto"),
    })
    .prefault({}),
  redis: redisSchema.optional(),
  auth: authSchema.prefault({}),
  acl: z.strictObject({ file: filePath }).optional(),
  limits: limitsSchema.prefault({}),
  shutdown: z
    .strictObject({
      drainSeconds: z.number().min(0).max(3600).default(20),
      /**
       * Publish the wills of clients the drain disconnects. Off by default: a drain moves
       * devices to other nodes, it is no failure of theirs, and wills would raise false alarms.
       */
      publishWills: z.boolean().default(false),
    })
    .prefault({}),
  /** The device registry API on its own listener; absent: off. */
  admin: z
    .strictObject({
      host: host.default("127.0.0.1"),
      port: port.default(9200),
      /** SHA-256 hex digests of the bearer tokens (`sluice admin-token` makes one). */
      tokens: z
        .array(z.string().regex(/^[0-9a-f]{64}$/, "must be the SHA-256 hex of a token"))
        .default([]),
      /** HTTPS for the API; with `ca`, a client certificate it verifies is an admin credential. */
      tls: z.strictObject({ cert: filePath, key: filePath, ca: filePath.optional() }).optional(),
      maxBodyBytes: z.number().int().min(1_024).max(1_048_576).default(65_536),
      /** The CA that signs device certificates (`sluice ca init` makes one); absent: none issued. */
      ca: z
        .strictObject({
          cert: filePath,
          key: filePath,
          /** Intermediate certificates sent with issued certificates, when `cert` is one. */
          chain: filePath.optional(),
          deviceCertificateDays: z.number().int().min(1).max(825).default(90),
        })
        .optional(),
      /** How long an enrollment token stays good when its request names no lifetime. */
      enrollmentTokenSeconds: z.number().int().min(60).max(2_592_000).default(86_400),
      maxConnectionsPerIp: positiveInt
        .default(16)
        .describe(
          "Open connections one client address may hold on the admin port; more are closed at once.",
        ),
      unauthenticatedRequestsPerMinute: positiveInt
        .default(60)
        .describe(
          "Requests per minute one client address may make without a valid admin credential (enrollment, /openapi.json, refused calls); beyond it they get 429.",
        ),
    })
    .refine((admin) => admin.tokens.length > 0 || admin.tls?.ca !== undefined, {
      message: "needs tokens, or tls.ca so that client certificates authenticate admins",
    })
    .optional(),
  /**
   * Where a node without Redis keeps its device registry (a JSON file it writes). With Redis
   * the registry lives there, shared by the cluster, and this is not used.
   */
  registry: z.strictObject({ file: filePath }).optional(),
});

/** The config as written by a user, before defaults. */
export type ConfigInput = z.input<typeof configSchema>;
/** The parsed config, defaults applied, before the node id and paths are resolved. */
export type ParsedConfig = z.output<typeof configSchema>;
export type ListenerConfig = z.output<typeof listenerSchema>;
export type ListenerType = ListenerConfig["type"];
export type TlsListenerConfig = Extract<ListenerConfig, { type: "tls" | "wss" }>;

export function isTlsListener(listener: ListenerConfig): listener is TlsListenerConfig {
  return listener.type === "tls" || listener.type === "wss";
}

/** The file settings of a TLS listener: checked at load, resolved against the config folder, watched. */
export const TLS_FILE_FIELDS = ["cert", "key", "ca", "crl"] as const;
export type LogLevel = ParsedConfig["log"]["level"];

/** The effective, frozen configuration a node runs with. */
export interface SluiceConfig extends Omit<ParsedConfig, "nodeId" | "auth"> {
  readonly nodeId: string;
  readonly auth: ParsedConfig["auth"] & { readonly allowAnonymous: boolean };
  /** Folder that relative paths were resolved against; absent when no file was given. */
  readonly configDir?: string;
}
