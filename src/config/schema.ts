import { z } from "zod";
import { parseCidr } from "./cidr.js";
import { fileKeysOf } from "./file-keys.js";
import { publishLimitsSchema } from "./publish-limits-schema.js";
import { sparkplugSchema } from "./sparkplug-schema.js";

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
/** Also what a node without Redis uses: aedes' own timers run on it. */
export const HEARTBEAT_MS_DEFAULT = 1_000;
/** Also what the admin API passes on when no device CA is configured (nothing is issued then). */
export const DEVICE_CERTIFICATE_DAYS_DEFAULT = 90;
/** A file the node reads; `.meta({ file })` lets config/file-keys.ts find every such key. */
const filePath = z.string().min(1, "must be a file path").meta({ file: "read" });
const cidr = z
  .string()
  .refine(
    (text) => parseCidr(text) !== undefined,
    "must be an IP address or CIDR, e.g. 10.0.0.0/8",
  );
const positiveInt = z.number().int().positive();

const noDelay = z
  .boolean()
  .default(true)
  .describe(
    "TCP_NODELAY on client sockets. true: each packet leaves at once, so a command reaches its PLC without waiting for Nagle's algorithm; the packets a client is sent in one turn of the event loop still leave in one write. false: the kernel may hold a small segment back until the previous one is acknowledged.",
  );
const listenHost = host
  .default("0.0.0.0")
  .describe("Address the listener binds to: `0.0.0.0` (every IPv4 address), `::`, or one address.");
const proxyProtocol = z
  .boolean()
  .default(false)
  .describe(
    "Expect a PROXY protocol v1 or v2 header (HAProxy `send-proxy`, nginx `proxy_protocol on`, AWS NLB) before anything else, and take the client's address from it. On `tls` it comes before the handshake. Every connection must then come from `trustedProxies` and start with a header; others are refused. Requires `trustedProxies`.",
  );
const trustedProxies = z
  .array(cidr)
  .default([])
  .describe(
    "Addresses or CIDRs of the proxies whose word on the client's address is believed: the PROXY protocol header on `tcp`/`tls`, `X-Forwarded-For` on `ws`/`wss` (the right-most address that is not itself a trusted proxy). From any other peer the header is ignored (ws) or the connection refused (PROXY protocol).",
  )
  .meta({ examples: [["10.0.0.0/8", "fd00::/8"]] });

const listenerType =
  "The transport: `tcp` (MQTT over TCP), `tls` (MQTT over TLS, optionally mutual), `ws` (MQTT over WebSocket, subprotocol `mqtt`) or `wss` (WebSocket over TLS).";
const listenPort = (value: number) =>
  port
    .default(value)
    .describe(
      "TCP port to listen on; `0` picks a free port, which the `listener.started` log line reports.",
    );

const tcpListener = z.strictObject({
  type: z.literal("tcp").describe(listenerType),
  host: listenHost,
  port: listenPort(1883),
  proxyProtocol,
  trustedProxies,
  noDelay,
});

/** TLS material and client-certificate policy shared by `tls` and `wss`. */
const tlsOptions = {
  cert: filePath
    .describe(
      "Server certificate (PEM), with any intermediates after it. Reloaded when the file changes or on SIGHUP.",
    )
    .meta({ examples: ["tls.crt"] }),
  key: filePath
    .describe("Private key (PEM) of `cert`. Reloaded with it.")
    .meta({ examples: ["tls.key"] }),
  passphrase: z
    .string()
    .optional()
    .describe("Passphrase of an encrypted private key. A secret: redacted in output.")
    .meta({ examples: ["change-me"] }),
  ca: filePath
    .optional()
    .describe(
      "CA bundle (PEM) that client certificates must chain to. Required with `requireClientCert`.",
    )
    .meta({ examples: ["ca.crt"] }),
  crl: filePath
    .optional()
    .describe(
      "Certificate revocation list (PEM) checked against client certificates; a revoked certificate fails the handshake. Reloaded when the file changes.",
    )
    .meta({ examples: ["ca.crl"] }),
  registryCrl: z
    .boolean()
    .default(false)
    .describe(
      "Also check client certificates against the device CA's CRL kept in the device registry (see `admin.ca`), reloaded on every node when a certificate is revoked, and close connections made with a revoked certificate. Once there is such a CRL, OpenSSL wants one for every CA in `ca`: use this on listeners whose `ca` is the device CA.",
    ),
  requestCert: z
    .boolean()
    .default(false)
    .describe(
      "Ask clients for a certificate. A verified one can authenticate the client (see `auth.certificateIdentity`); one that does not verify is never trusted.",
    ),
  requireClientCert: z
    .boolean()
    .default(false)
    .describe(
      "Refuse the handshake without a client certificate that chains to `ca` and is not revoked (mutual TLS). Requires `requestCert: true` and `ca`.",
    ),
  minVersion: z
    .enum(["TLSv1.2", "TLSv1.3"])
    .default("TLSv1.2")
    .describe("Oldest TLS version accepted."),
  ciphers: z
    .string()
    .min(1)
    .optional()
    .describe(
      "OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are not affected); absent: Node's default list.",
    )
    .meta({ examples: ["ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"] }),
};

const tlsListener = z.strictObject({
  type: z.literal("tls").describe(listenerType),
  host: listenHost,
  port: listenPort(8883),
  proxyProtocol,
  trustedProxies,
  noDelay,
  ...tlsOptions,
});

const wsPath = z
  .string()
  .regex(/^\/[^\s?#]*$/, "must be an absolute URL path such as /mqtt")
  .default("/mqtt")
  .describe("URL path WebSocket clients connect to; upgrade requests for other paths are refused.");

const wsListener = z.strictObject({
  type: z.literal("ws").describe(listenerType),
  host: listenHost,
  port: listenPort(8080),
  path: wsPath,
  trustedProxies,
});

const wssListener = z.strictObject({
  type: z.literal("wss").describe(listenerType),
  host: listenHost,
  port: listenPort(8443),
  path: wsPath,
  trustedProxies,
  ...tlsOptions,
});

export const listenerSchema = z.discriminatedUnion("type", [
  tcpListener,
  tlsListener,
  wsListener,
  wssListener,
]);

const redisEndpoint = z.strictObject({
  host: host.describe("Host name or address.").meta({ examples: ["redis-1.plant.example"] }),
  port: port.describe("Port.").meta({ examples: [26379] }),
});

const redisSchema = z.strictObject({
  url: z
    .string()
    .regex(/^rediss?:\/\//, "must be a redis:// or rediss:// URL")
    .optional()
    .describe(
      "A single Redis: `redis://[user:password@]host:port/db`, or `rediss://` for TLS (the system's CAs unless `tls.ca`). Give exactly one of `url`, `sentinels` or `cluster`. The password in the URL is redacted in output.",
    )
    .meta({ examples: ["redis://redis.plant.example:6379/0"] }),
  sentinels: z
    .array(redisEndpoint)
    .optional()
    .describe(
      "Redis Sentinel: the Sentinels to ask for the primary named `name`. Sluice follows failovers, and on `+switch-master` moves all its connections to the new primary at once. Connections to the Sentinels themselves are plain TCP.",
    ),
  name: z
    .string()
    .min(1)
    .optional()
    .describe("The primary's name in Sentinel. Required with `sentinels`.")
    .meta({ examples: ["mymaster"] }),
  username: z
    .string()
    .optional()
    .describe("Redis ACL user (Redis 6 and newer).")
    .meta({ examples: ["sluice"] }),
  password: z
    .string()
    .optional()
    .describe(
      "Password of the Redis user (or of `requirepass`). A secret: redacted in output; prefer the environment variable.",
    )
    .meta({ examples: ["change-me"] }),
  sentinelPassword: z
    .string()
    .optional()
    .describe(
      "Password the Sentinels ask for, when it differs from the data nodes'. A secret: redacted in output.",
    )
    .meta({ examples: ["change-me"] }),
  cluster: z
    .array(redisEndpoint)
    .optional()
    .describe(
      "Redis Cluster: seed nodes; the rest of the cluster is discovered from them. Sluice's own keys share one hash slot (`<keyPrefix>{state}:`); retained messages spread over the slots; pub/sub between nodes is sharded (SPUBLISH/SSUBSCRIBE, Redis 7 or later), spread over the primaries.",
    ),
  tls: z
    .strictObject({
      ca: filePath
        .optional()
        .describe("CA (PEM) that Redis' certificate must chain to; absent: the system's CAs.")
        .meta({ examples: ["redis-ca.crt"] }),
      cert: filePath
        .optional()
        .describe("Client certificate (PEM) for Redis' `tls-auth-clients`; goes with `key`.")
        .meta({ examples: ["sluice-redis.crt"] }),
      key: filePath
        .optional()
        .describe("Private key (PEM) of `cert`.")
        .meta({ examples: ["sluice-redis.key"] }),
    })
    .optional()
    .describe(
      "TLS to Redis, for any of the three forms: on with a `rediss://` URL or with this block (an empty block uses the system's CAs).",
    ),
  keyPrefix: z
    .string()
    .default("sluice:")
    .describe(
      "Prefix of every Redis key Sluice writes. On a single Redis or Sentinel, pub/sub channels ignore it (and the database number): two Sluice clusters must not share one Redis. On a Redis Cluster the shard channels carry it (`<keyPrefix>pubsub:{0}` to `{63}`).",
    ),
  nodeLeaseSeconds: z
    .number()
    .min(1)
    .max(300)
    .default(15)
    .describe(
      "How long a node's claim on its `nodeId` outlives the node: a crashed node's id is free again after this, and a node restarted with that id waits for it. A crashed node's clients' wills go out once it has run out (the other nodes publish a silent node's wills only when its lease is gone too), and a node cut off from Redis fences itself before it does (`fence.afterMs`).",
    ),
  heartbeatMs: z
    .number()
    .int()
    .min(100)
    .max(60_000)
    .default(HEARTBEAT_MS_DEFAULT)
    .describe(
      "How often a node tells the others it lives. A node silent for 3 of these is dead: `sluice_cluster_nodes` drops it, and its clients' wills go out once it is known gone: its lease (`nodeLeaseSeconds`) has run out, or Redis holds none of its connections (`deadNodeByConnections`); within 4 of these after that.",
    ),
  deadNodeByConnections: z
    .boolean()
    .default(true)
    .describe(
      "Know a silent node (3 heartbeats) gone as soon as Redis holds none of its connections, instead of only when its lease runs out: a crashed node's clients' wills (Sparkplug NDEATHs among them) go out 2 to 3 s after the crash, not up to `nodeLeaseSeconds` later. The kernel closes a dead process's connections at once; a partition or a stalled process leaves them open in Redis, so neither is taken for a death. Used on a single Redis and Sentinel (a Redis Cluster: the lease only), and only while Redis' `timeout` is 0 or at least the lease (read at start; a warning when it cannot be). Turn it off where the network resets connections during a partition (a firewall that rejects with a TCP reset).",
    ),
  messageFormat: z
    .enum(["compact", "msgpack"])
    .default("compact")
    .describe(
      "How a node writes the messages it sends the other nodes through Redis; every node reads both. `compact`: Sluice's own layout of a PUBLISH (its fields in a fixed order, without their names): a third smaller, and read in half the time. `msgpack`: mqemitter-redis' envelope, which nodes of versions without this key read too: set it on the new nodes while a rolling upgrade from such a version is under way, and remove it once no old node is left (an old node drops a compact message, counted as `sluice_dropped_messages_total{reason=\"undecodable\"}`).",
    ),
  backpressure: z
    .strictObject({
      pendingBytes: z
        .number()
        .int()
        .min(65_536)
        .default(4 * 1024 * 1024)
        .describe(
          "Bytes of PUBLISHes sent to Redis and not yet answered past which the node stops reading its publishers' sockets (at their next PUBLISH), until half of it is left.",
        ),
      subscriptionLagBytes: z
        .number()
        .int()
        .min(65_536)
        .default(4 * 1024 * 1024)
        .describe(
          "Bytes Redis holds for a node's subscription (CLIENT LIST `omem`, looked at every 100 ms; on a Redis Cluster on every primary, a node's lag being its largest shard connection's, since Redis cuts each on its own) past which publishers are paused the same way: this node's own, or any other node's (every node reads what is published here). Keep it well under Redis' `client-output-buffer-limit pubsub` (32 MB hard, 8 MB for 60 s soft by default), where Redis cuts the subscription.",
        ),
      remoteStallMs: z
        .number()
        .int()
        .min(1_000)
        .max(600_000)
        .default(5_000)
        .describe(
          "How long another node's subscription may stay past `subscriptionLagBytes` without once falling under it before this node stops pausing its publishers for it (`cluster.remote_lag_stalled`): that node is stopped or hung, not slow, and Redis' own limit then decides its subscription. Holding the cluster's publishers for it would stop the cluster.",
        ),
      waitingDeliveries: z
        .number()
        .int()
        .min(1)
        .max(10_000_000)
        .default(1_000)
        .describe(
          "QoS 1/2 deliveries waiting for this node's subscribers' in-flight windows (of subscribers that acknowledged one within the last second) past which the node, while its event loop is saturated, stops reading its Redis subscription until half are delivered: what it cannot deliver yet then waits in Redis, where every node's `subscriptionLagBytes` bound slows the publishers, instead of being read here and dropped from full queues. On a Redis Cluster every shard connection of the node is paused.",
        ),
      pausedReadGapMs: z
        .number()
        .min(0)
        .max(10)
        .default(1)
        .describe(
          "While this node does not read its Redis subscription (`waitingDeliveries`), it sleeps between two passes over its connections so that a pass begins at most every this many milliseconds: the acknowledgements it waits for, which clients send one by one, are then read many at a time instead of one a read (measured: a quarter of the subscribers' node's CPU went to such reads). Its connections, timers and probes are served at most this late meanwhile; a pass that took longer is not followed by a sleep. 0: off. `sluice_cluster_paused_sleep_seconds_total` counts the time slept.",
        ),
    })
    .prefault({})
    .describe(
      "End-to-end backpressure: a burst slows this node's publishers (TCP flow control) instead of making Redis cut the node's subscription. `sluice_cluster_backpressure_seconds_total` counts the time publishers were paused.",
    ),
  fence: z
    .strictObject({
      enabled: z
        .boolean()
        .default(true)
        .describe(
          "Fence the node when it cannot reach Redis (off: it keeps its clients however long Redis is away).",
        ),
      afterMs: z
        .number()
        .int()
        .min(1_000)
        .max(300_000)
        .optional()
        .describe(
          "How long without a Redis round trip before the node fences itself. Absent: two thirds of `nodeLeaseSeconds` (10 s by default), so that the node lets go of its clients before its lease runs out and other nodes may publish their wills or expire their sessions. Shorter moves clients sooner, and turns shorter Redis blips (a Sentinel failover takes 2 to 3 s) into reconnect storms; longer than the lease lets a cut-off node hold clients that the rest of the cluster already counts as gone.",
        )
        .meta({ examples: [10_000] }),
      probeMs: z
        .number()
        .int()
        .min(50)
        .max(10_000)
        .default(500)
        .describe(
          "How often the node sends Redis a PING to time its round trip (`sluice_redis_round_trip_seconds`); one at a time.",
        ),
    })
    .prefault({})
    .describe(
      "Self-fencing. A node cut off from Redis (a partition: its TCP connections hang rather than close) can neither acknowledge nor deliver, while the rest of the cluster soon counts it as gone. After `afterMs` without a Redis round trip it fences itself: it disconnects its clients (without their wills: the survivors publish those once its lease is gone, if they are not back by then), turns not-ready (`/readyz` 503, `sluice_fenced` 1) so the load balancer sends them to nodes that reach Redis, and reconnects to Redis. It serves again at the first round trip. When Redis is gone for every node, every node fences: clients then wait for Redis instead of holding connections that can do nothing.",
    ),
  replicaAcks: z
    .strictObject({
      replicas: z
        .number()
        .int()
        .min(0)
        .max(16)
        .optional()
        .describe(
          "Replicas that must confirm (Redis `WAIT`) the writes an acknowledgement depends on before it is sent: a QoS 1/2 publish's PUBACK or PUBREC (the offline sessions' queued copies, the retained message, the inbound QoS 2 packet id), a persistent session's SUBACK, and a stored will's CONNACK. Redis replicates asynchronously, so without it a Sentinel failover can lose what the old primary acknowledged and had not yet sent to the replica it promoted. When fewer confirm within `timeoutMs`, no message is acknowledged: the publisher's connection is closed and it sends again (as when Redis is unreachable); an inbound QoS 2 message is not published, nor a PUBREL sent to a subscriber, until they do (a stored PUBREL is resent to a resumed session regardless); a SUBACK or a will's CONNACK goes out after the wait. Absent: 1 with `sentinels`, 0 (off) otherwise. Not on a Redis Cluster. With Sentinel, run at least 2 replicas at the same `replica-priority`: after a failover 1 remains to confirm, and Sentinel promotes the replica furthest ahead.",
        )
        .meta({ examples: [1] }),
      timeoutMs: z
        .number()
        .int()
        .min(10)
        .max(60_000)
        .default(1_000)
        .describe(
          "How long the replicas have to confirm a turn's writes (the WAIT timeout); past it the acknowledgements waiting on them are withheld.",
        ),
    })
    .prefault({})
    .describe(
      "Acknowledgements that survive a Redis failover: each turn's writes that acknowledgements depend on are confirmed by replicas with one WAIT, on a connection of its own. Costs each QoS 1/2 acknowledgement a replication round trip (see docs/clustering.md, failover).",
    ),
});

const authSchema = z.strictObject({
  allowAnonymous: z
    .boolean()
    .optional()
    .describe(
      "Let clients connect without credentials. Absent: false with a config file, true without one (the node then listens on 127.0.0.1 only). A warning is logged whenever it is on.",
    )
    .meta({ examples: [false] }),
  passwordFile: filePath
    .optional()
    .describe(
      "Password file, `username:hash` per line: written by `sluice passwd` (salted scrypt); Mosquitto's `$6$` and `$7$` hashes are read too, so `mosquitto_passwd` files work unchanged. Reloaded on change or SIGHUP; clients whose entry disappears are disconnected.",
    )
    .meta({ examples: ["passwd"] }),
  certificateIdentity: z
    .enum(["none", "cn-is-clientid", "cn-is-username"])
    .default("none")
    .describe(
      "What a verified client certificate proves. `none`: nothing (passwords only). `cn-is-clientid`: the certificate authenticates the client, whose client id must equal the CN; the CN is its identity (`%u` in ACLs). `cn-is-username`: the CN is the username, whatever the client sends, and the client id is free (or bound by `clientIdPattern`).",
    ),
  clientIdPattern: z
    .string()
    .min(1)
    .optional()
    .describe(
      "Client ids an authenticated identity may use: `%u` is the identity (matched literally), `*` any run of characters, anything else literal. `%u` binds each device to its own id; `%u-*` allows several. Absent: any client id. Devices in the registry always connect with client id = their id.",
    )
    .meta({ examples: ["%u"] }),
  scram: z
    .boolean()
    .default(true)
    .describe(
      "Offer MQTT 5 enhanced authentication with SCRAM-SHA-256 (AUTH packets; the password never crosses the wire, and the client verifies the server too) to users whose entry in the password file or device registry is a SCRAM verifier (`sluice passwd --scram`; PostgreSQL's `SCRAM-SHA-256$...` format). Such an entry also verifies plain passwords. false: a CONNECT naming the method is refused with 0x8C.",
    ),
});

const limitsSchema = z.strictObject({
  maxPacketBytes: z
    .number()
    .int()
    .min(64)
    .max(268_435_455)
    .default(262_144)
    .describe(
      "Largest MQTT packet a client may send. A larger one closes the connection as soon as its fixed header announces the size, before the body is read.",
    ),
  maxTopicBytes: z
    .number()
    .int()
    .min(1, "must be at least 1 (bytes)")
    .max(65_535, "must be at most 65535, the longest topic MQTT can carry")
    .default(4_096)
    .describe(
      "Longest topic, in UTF-8 bytes, in a PUBLISH, a SUBSCRIBE or UNSUBSCRIBE filter, or a will. Over it: a PUBLISH, an UNSUBSCRIBE or a CONNECT with such a will closes the connection; a SUBSCRIBE filter gets SUBACK 0x80. MQTT allows 65,535; the default is 16 times AWS IoT Core's limit of 256, which keeps a topic's cost in subscription tries, retained keys and queues bounded.",
    ),
  connectTimeoutMs: z
    .number()
    .int()
    .min(100)
    .max(600_000)
    .default(5_000)
    .describe(
      "A connection must complete its PROXY header, TLS handshake and CONNECT within this, or it is closed (slowloris).",
    ),
  maxKeepaliveSeconds: z
    .number()
    .int()
    .min(1)
    .max(65_535)
    .optional()
    .describe(
      "Longest keep-alive a client may ask for; keep-alive 0 (none) is refused too, since a silent connection without one never times out and holds its share of the per-address quota. MQTT 3.1.1: refused with CONNACK 2 (3.1.1 cannot tell a client to use another value), as Mosquitto's `max_keepalive` does. MQTT 5: accepted, with this limit as the CONNACK's Server Keep Alive. Absent: any.",
    )
    .meta({ examples: [300] }),
  connections: z
    .strictObject({
      perNode: positiveInt
        .default(100_000)
        .describe("Open connections on this node; more are refused at the socket."),
      perIp: positiveInt
        .optional()
        .describe(
          "Open connections from one client address, on this node. Refused at the socket, before any TLS handshake. Absent: unlimited.",
        )
        .meta({ examples: [20] }),
      perUsername: positiveInt
        .optional()
        .describe(
          "Open connections of one username across the cluster, checked on CONNECT once authenticated; over it: CONNACK 3. Absent: unlimited.",
        )
        .meta({ examples: [5] }),
      ratePerIp: positiveInt
        .optional()
        .describe(
          "New connections per second from one client address, as a token bucket with this burst; refused at the socket. Absent: unlimited.",
        )
        .meta({ examples: [5] }),
      cluster: positiveInt
        .optional()
        .describe(
          "Open connections across the cluster: the sum of each live node's count, which each node writes to Redis every second. Absent: unlimited.",
        )
        .meta({ examples: [100_000] }),
      answerRefusals: z
        .boolean()
        .default(true)
        .describe(
          "Answer a socket that `perIp`, `perNode`, `cluster` or `ratePerIp` refuses with a CONNACK (MQTT 5: 0x97 quota exceeded, 0x9F connection rate exceeded; 3.1.1: 3), within bounds that keep answers cheap. false: close it at once. MQTT.js (and so Node-RED) stops reconnecting after a CONNACK refusal unless the client sets `reconnectOnConnackError`, while it retries a closed connection: for such fleets, false keeps a refused device coming back.",
        ),
    })
    .prefault({})
    .describe(
      "Connection quotas. Every refusal is counted in `sluice_connections_rejected_total{reason}`. Absent ones are unlimited, except a node's own total.",
    ),
  flapping: z
    .strictObject({
      maxConnects: positiveInt
        .default(15)
        .describe("Connects of one client id within `windowSeconds` that are allowed."),
      windowSeconds: positiveInt.default(60).describe("The window connects are counted over."),
      banSeconds: positiveInt
        .default(300)
        .describe("How long a flapping client id is refused (CONNACK 3) on every node."),
    })
    .optional()
    .describe(
      "A client id that connects more than `maxConnects` times within `windowSeconds` is refused for `banSeconds` across the cluster, with an `audit.abuse` line. Counted only after authentication, so nobody can get a device banned by connecting in its name. Absent: off.",
    ),
  overload: z
    .strictObject({
      eventLoopDelayMs: z
        .number()
        .int()
        .min(10)
        .max(60_000)
        .default(2_000)
        .describe(
          "Overloaded while the longest event-loop delay within a 1 s window exceeds this.",
        ),
      heapUsedRatio: z
        .number()
        .gt(0)
        .max(1)
        .default(0.9)
        .describe(
          "Overloaded while heap used over the heap's limit (V8's `--max-old-space-size`) exceeds this.",
        ),
      recoverMs: z
        .number()
        .int()
        .min(0)
        .max(600_000)
        .default(2_000)
        .describe(
          "Both must stay under their thresholds this long before the node takes clients again.",
        ),
    })
    .prefault({})
    .describe(
      "Overload shedding: while overloaded the node answers new CONNECTs with CONNACK 3 (before any password is hashed) and `/readyz` turns 503; established sessions keep working. Log events `overload.started` and `overload.ended`.",
    ),
  publish: publishLimitsSchema
    .optional()
    .describe(
      "Per-identity publish rate limits, cluster-wide: the identity is the username, or the client id for a client without one. A client over its budget is throttled (its socket is not read until the budget allows), never dropped, and disconnected after `disconnectAfterSeconds` of continuous throttling. Give `messagesPerSecond`, `bytesPerSecond` or both. Absent: no publish limit.",
    ),
  subscriptions: z
    .strictObject({
      perClient: positiveInt
        .optional()
        .describe(
          "Subscriptions one client may hold; filters past it get SUBACK 0x80, also within one SUBSCRIBE. Absent: unlimited.",
        )
        .meta({ examples: [100] }),
      maxTopicLevels: z
        .number()
        .int()
        .min(1)
        .max(100)
        .default(100)
        .describe(
          "Most levels in a topic or filter. A deeper filter gets SUBACK 0x80; a deeper PUBLISH topic closes the connection. 100 is the engine's own hard limit.",
        ),
    })
    .prefault({})
    .describe("Subscription limits."),
  authFailures: z
    .strictObject({
      perIp: positiveInt
        .default(10)
        .describe(
          "Failed authentications from one source address after which that address is locked out for `blockSeconds`.",
        ),
      perUsername: positiveInt
        .default(5)
        .describe(
          "Failed authentications for one username from one source address after which that username is locked out from that address only, for `blockSeconds`. The username stays usable from other addresses.",
        ),
      blockSeconds: positiveInt
        .default(300)
        .describe("How long a lockout lasts, and the window failures are counted in."),
      acrossSources: z
        .strictObject({
          alertAfter: positiveInt
            .default(50)
            .describe(
              "Failed authentications for one username summed over every source address (within `blockSeconds`) that raise an `audit.username_targeted` line and `sluice_auth_username_targeted_total` (alert SluiceUsernameTargeted).",
            ),
          block: z
            .boolean()
            .default(false)
            .describe(
              "Also lock that username out for every source address once `alertAfter` is reached. Off by default: it lets anyone who knows a username keep that device offline.",
            ),
        })
        .prefault({})
        .describe("Password guessing spread over many addresses against one username."),
    })
    .prefault({})
    .describe(
      "Brute-force lockout, on by default and cluster-wide through Redis. Checked before any password is hashed. Clients authenticated by certificate are never affected; correct credentials from an address that is not itself locked out are admitted.",
    ),
  queue: z
    .strictObject({
      maxInflight: z
        .number()
        .int()
        .min(1, "must be at least 1")
        .max(65_535, "must be at most 65535 (the packet identifiers a client can have in flight)")
        .default(100)
        .describe(
          "QoS 1/2 deliveries written to a client and not yet acknowledged; further ones wait in order and are written as acknowledgements come in (a window of 64 or more: together, once a quarter of it is free). At most 65,535: each holds a packet identifier [MQTT-2.3.1-4].",
        ),
      maxQueuedPerClient: z
        .number()
        .int()
        .min(1, "must be at least 1")
        .max(10_000_000, "must be at most 10000000")
        .default(10_000)
        .describe(
          'QoS 1/2 messages held for one client: its stored queue (offline, or waiting) and the deliveries waiting for its window. Past it the oldest are dropped, counted in `sluice_dropped_messages_total{reason="queue_full"}` and logged (`queue.full`). Must be at least `maxInflight`.',
        ),
      drainTimeoutMs: z
        .number()
        .int()
        .min(100)
        .max(600_000)
        .default(10_000)
        .describe(
          "A subscriber whose socket takes nothing for this long is disconnected; a persistent session keeps its queue.",
        ),
      maxBufferedBytes: z
        .number()
        .int()
        .min(16_384, "must be at least 16384")
        .max(67_108_864, "must be at most 67108864")
        .default(262_144)
        .describe(
          "QoS 0 to a client is dropped, and counted in `sluice_dropped_messages_total{reason=\"slow_consumer\"}`, while its socket's kernel buffer is full and at least this many bytes wait in the node's memory behind it.",
        ),
    })
    .prefault({})
    .describe("Slow consumers: the in-flight window, per-client queues and the drop rules."),
});

/** How a shared group's messages are spread over its members (docs/shared-subscriptions.md). */
export const SHARE_STRATEGIES = [
  "round_robin",
  "random",
  "local_first",
  "sticky",
  "hash_clientid",
  "hash_topic",
] as const;

export type ShareStrategy = (typeof SHARE_STRATEGIES)[number];

const nodeId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, "must be 1-128 characters of A-Z a-z 0-9 . _ -");

export const configSchema = z.strictObject({
  nodeId: nodeId
    .optional()
    .describe(
      "This node's id, unique among live nodes: it names the node in metrics, logs, Redis and will claims. Absent: the host name plus the process id. In a cluster give each node a fixed one (in Kubernetes, the pod name); a node is refused at start while another live node holds the same id.",
    )
    .meta({ examples: ["plant-a-1"] }),
  listeners: z
    .array(listenerSchema)
    .min(1, "at least one listener is required")
    .prefault([{ type: "tcp" }])
    .describe(
      "The MQTT listeners; several run at once, each on its own host and port. Default (with a config file): one `tcp` listener on 0.0.0.0:1883.",
    ),
  http: z
    .strictObject({
      host: host
        .default("127.0.0.1")
        .describe("Address of the HTTP server for `/healthz`, `/readyz` and `/metrics`."),
      port: port.default(9100).describe("Port of the HTTP server."),
      maxConnectionsPerIp: positiveInt
        .default(32)
        .describe(
          "Open connections one client address may hold on this port; more are closed at once, so that one address cannot take the sockets the kubelet's probes and Prometheus' scrapes need.",
        ),
    })
    .prefault({})
    .describe(
      "The probes and metrics server: `GET /healthz` (200 while the process serves), `GET /readyz` (200 while the node accepts clients and reaches Redis, 503 otherwise and while draining), `GET /metrics` (Prometheus text).",
    ),
  log: z
    .strictObject({
      level: z
        .enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"])
        .default("info")
        .describe("Lowest level written. Connection open and close are at `debug`."),
      format: z
        .enum(["auto", "json", "pretty"])
        .default("auto")
        .describe(
          "`json`: one JSON object per line, each with a stable `event` field. `pretty`: human-readable. `auto`: pretty on a terminal, JSON otherwise.",
        ),
    })
    .prefault({})
    .describe("Logging, to standard output. Payloads and passwords are never logged."),
  redis: redisSchema
    .optional()
    .describe(
      "The Redis that nodes share: pub/sub between nodes, sessions, subscriptions, retained messages, in-flight QoS 1/2, wills, cluster-wide limits, the node and device registries. Give one of `url`, `sentinels` (with `name`) or `cluster`. Absent: a single node with everything in memory.",
    ),
  auth: authSchema
    .prefault({})
    .describe(
      "Authentication. The device registry (with `admin`) is consulted first, then `passwordFile`; a verified client certificate authenticates when `certificateIdentity` says so.",
    ),
  acl: z
    .strictObject({
      file: filePath
        .describe(
          "ACL file: Mosquitto `acl_file` syntax, or YAML with the same meaning when the name ends in `.yaml`. Reloaded on change or SIGHUP.",
        )
        .meta({ examples: ["acl.conf"] }),
    })
    .optional()
    .describe(
      "Topic access control: with it, anything no rule grants is denied. Absent: every authenticated client may publish and subscribe anywhere except `$SYS`, with a warning at start.",
    ),
  limits: limitsSchema
    .prefault({})
    .describe("Limits that protect the node and the cluster from floods and misbehaving clients."),
  shutdown: z
    .strictObject({
      drainSeconds: z
        .number()
        .min(0)
        .max(3600)
        .default(20)
        .describe(
          "On SIGTERM or SIGINT the node turns not-ready, stops accepting, and disconnects its clients spread evenly over this many seconds, so that they reconnect elsewhere as a steady stream.",
        ),
      publishWills: z
        .boolean()
        .default(false)
        .describe(
          "Publish the wills of clients the drain disconnects. Off by default: a drain moves devices to other nodes, it is no failure of theirs, and wills would raise false alarms.",
        ),
      serverReference: z
        .string()
        .min(1)
        .max(1024)
        .optional()
        .describe(
          "While the node drains, MQTT 5 clients are disconnected with reason code 0x9C (use another server) and this Server Reference, for example the load balancer's address. Absent: 0x8B (server shutting down). MQTT 3.1.1 clients are just disconnected.",
        )
        .meta({ examples: ["mqtt.plant.example:8883"] }),
    })
    .prefault({})
    .describe("Graceful shutdown. A second signal exits at once (exit code 1)."),
  mqtt5: z
    .strictObject({
      receiveMaximum: z
        .number()
        .int()
        .min(1)
        .max(65_535)
        .default(1_000)
        .describe(
          "The Receive Maximum advertised to MQTT 5 clients: QoS 1 and 2 PUBLISHes a client may have unacknowledged towards the node. The first throttle for MQTT 5 publishers; a client that exceeds it is disconnected with 0x93.",
        ),
      topicAliasMaximum: z
        .number()
        .int()
        .min(0)
        .max(65_535)
        .default(10)
        .describe(
          "The highest Topic Alias an MQTT 5 client may use towards the node (advertised in CONNACK). 0: clients may not use topic aliases. Outbound, the node uses aliases up to the client's own Topic Alias Maximum.",
        ),
      maxSessionExpirySeconds: z
        .number()
        .int()
        .min(0)
        .max(4_294_967_295)
        .optional()
        .describe(
          "Caps the Session Expiry Interval an MQTT 5 client may ask for; the CONNACK tells the client the value applied. Absent: no cap (4294967295, never expires, is allowed, like an MQTT 3.1.1 persistent session).",
        )
        .meta({ examples: [604_800] }),
    })
    .prefault({})
    .describe(
      "MQTT 5 settings. MQTT 3.1.1 and 5 run side by side on every listener; everything else (ACLs, limits, audit, metrics) applies to both alike.",
    ),
  sharedSubscriptions: z
    .strictObject({
      strategy: z
        .enum(SHARE_STRATEGIES)
        .default("round_robin")
        .describe(
          "How a group's messages are spread over its members: `round_robin` (each node takes the members in turn), `random`, `local_first` (a member on the node the message was published on, when there is one, round robin otherwise), `sticky` (one member until it leaves), `hash_clientid` (by publisher: one publisher's messages go to one member, in order) or `hash_topic` (by topic: one topic's messages go to one member, in order).",
        ),
      groups: z
        .array(
          z.strictObject({
            match: z
              .string()
              .min(1)
              .max(256)
              .describe("Share names this entry applies to; `*` matches any run of characters.")
              .meta({ examples: ["historian-*"] }),
            strategy: z.enum(SHARE_STRATEGIES).describe("The strategy for those groups."),
          }),
        )
        .max(100)
        .default([])
        .describe("Strategies for groups by share name; the first entry that matches applies."),
      maxQueued: z
        .number()
        .int()
        .min(1)
        .max(1_000_000)
        .default(10_000)
        .describe(
          "Messages a member holds unacknowledged, and messages a group keeps while no member is online (delivered to the next member that joins); at most `limits.queue.maxQueuedPerClient` (a member's connection queue). Past it a message goes to another member, or is dropped and counted (`sluice_shared_dropped_total`).",
        ),
      maxGroups: z
        .number()
        .int()
        .min(1)
        .max(100_000)
        .default(1_000)
        .describe(
          "Shared groups (share name and filter) the cluster holds at once; a SUBSCRIBE that would make one more is refused (0x97 for MQTT 5). Bounds Redis keys and the per-group metrics.",
        ),
    })
    .prefault({})
    .describe(
      "Shared subscriptions, `$share/{group}/{filter}`, for MQTT 5 and 3.1.1 clients: each message goes to one member of each group, cluster-wide. QoS 1 and 2 messages stay with their member until it acknowledges them, and go to another member if it leaves first. ACLs apply to the filter, and a rule must also grant `$share/<group>/<filter>` (for example `pattern read $share/%u/#`): joining a group takes messages from its other members.",
    ),
  admin: z
    .strictObject({
      host: host
        .default("127.0.0.1")
        .describe(
          "Address of the admin API. Anything but loopback requires `tls`: bearer tokens must not cross a network in the clear.",
        ),
      port: port.default(9200).describe("Port of the admin API."),
      tokens: z
        .array(z.string().regex(/^[0-9a-f]{64}$/, "must be the SHA-256 hex of a token"))
        .default([])
        .describe(
          "SHA-256 hex digests of the admin bearer tokens (`sluice admin-token` makes a token and its digest). Redacted in output. Required unless `tls.ca` authenticates admins by certificate.",
        )
        .meta({ examples: [["<sha256 hex from sluice admin-token>"]] }),
      tls: z
        .strictObject({
          cert: filePath
            .describe("Certificate (PEM) of the admin API.")
            .meta({ examples: ["admin.crt"] }),
          key: filePath.describe("Private key (PEM) of `cert`.").meta({ examples: ["admin.key"] }),
          ca: filePath
            .optional()
            .describe(
              "CA (PEM) for admin client certificates: a certificate it verifies is an admin credential (`cert:<CN>` in the audit log).",
            )
            .meta({ examples: ["admins-ca.crt"] }),
        })
        .optional()
        .describe("HTTPS for the admin API; absent: plain HTTP, allowed on loopback only."),
      maxBodyBytes: z
        .number()
        .int()
        .min(1_024)
        .max(1_048_576)
        .default(65_536)
        .describe("Largest request body; a larger one gets 413."),
      ca: z
        .strictObject({
          cert: filePath
            .describe("Certificate (PEM) of the CA that signs device certificates.")
            .meta({ examples: ["device-ca/ca.crt"] }),
          key: filePath
            .describe("Private key (PEM) of that CA. Keep it readable by Sluice only.")
            .meta({ examples: ["device-ca/ca.key"] }),
          chain: filePath
            .optional()
            .describe(
              "Intermediate certificates sent with issued certificates, when `cert` is an intermediate CA.",
            )
            .meta({ examples: ["device-ca/chain.crt"] }),
          deviceCertificateDays: z
            .number()
            .int()
            .min(1)
            .max(825)
            .default(DEVICE_CERTIFICATE_DAYS_DEFAULT)
            .describe("Validity of issued device certificates when a request names none."),
        })
        .optional()
        .describe(
          "The CA that signs device certificates (`sluice ca init` makes one). Nodes holding it sign the registry's CRL again daily (valid 30 days). Absent: no certificates are issued.",
        ),
      enrollmentTokenSeconds: z
        .number()
        .int()
        .min(60)
        .max(2_592_000)
        .default(86_400)
        .describe("How long an enrollment token stays good when its request names no lifetime."),
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
    .optional()
    .describe(
      "The device registry's admin API (`/api/v1`, OpenAPI document at `/openapi.json`) on its own listener. Needs Redis or `registry.file`. Absent: off.",
    ),
  registry: z
    .strictObject({
      file: filePath
        .describe("JSON file the node writes its device registry to (mode 0600).")
        .meta({ examples: ["devices.json"], file: "written" }),
    })
    .optional()
    .describe(
      "Where a node without Redis keeps its device registry. With Redis the registry lives there, shared by the cluster, and this is not used.",
    ),
  sparkplug: sparkplugSchema,
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
/** Every key that names a file (config/file-keys.ts reads them from the schema's marks). */
export const FILE_KEYS = fileKeysOf(configSchema);
export type LogLevel = ParsedConfig["log"]["level"];

/** The effective, frozen configuration a node runs with. */
export interface SluiceConfig extends Omit<ParsedConfig, "nodeId" | "auth"> {
  readonly nodeId: string;
  readonly auth: ParsedConfig["auth"] & { readonly allowAnonymous: boolean };
  /** Folder that relative paths were resolved against; absent when no file was given. */
  readonly configDir?: string;
}
