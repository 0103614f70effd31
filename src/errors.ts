/**
 * Sluice's error catalogue. Callers branch with `instanceof`, never on message text;
 * every error carries a stable `code` and, where one exists, the underlying `cause`.
 */
export class SluiceError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** What a log line's `err` field holds: always an Error, so pino serializes it one way. */
export function asError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}

/** The problems of a ConfigError, one line each; otherwise undefined. */
export function problemsOf(value: unknown): readonly string[] | undefined {
  return value instanceof ConfigError ? value.problems : undefined;
}

/** The configuration is invalid; `problems` holds one line per problem, each naming its key. */
export class ConfigError extends SluiceError {
  readonly problems: readonly string[];

  constructor(problems: readonly string[], options?: { cause?: unknown }) {
    super("CONFIG_INVALID", `invalid configuration:\n${problems.join("\n")}`, options);
    this.problems = problems;
  }
}

/** The command line was used wrongly. */
export class UsageError extends SluiceError {
  constructor(message: string) {
    super("USAGE", message);
  }
}

/** A listener could not be opened (port in use, permission denied, bad TLS material). */
export class ListenerError extends SluiceError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("LISTENER_FAILED", message, options);
  }
}

/**
 * MQTT 5 reason codes Sluice sends when it refuses or closes [MQTT-2.4]. A refusal carries
 * one; MQTT 3.1.1 clients get the nearest return code instead (the hook adapter maps it).
 */
export const ReasonCode = {
  UnspecifiedError: 0x80,
  MalformedPacket: 0x81,
  ProtocolError: 0x82,
  ClientIdentifierNotValid: 0x85,
  BadUserNameOrPassword: 0x86,
  NotAuthorized: 0x87,
  ServerUnavailable: 0x88,
  ServerBusy: 0x89,
  Banned: 0x8a,
  ServerShuttingDown: 0x8b,
  KeepAliveTimeout: 0x8d,
  SessionTakenOver: 0x8e,
  TopicFilterInvalid: 0x8f,
  TopicNameInvalid: 0x90,
  ReceiveMaximumExceeded: 0x93,
  PacketTooLarge: 0x95,
  MessageRateTooHigh: 0x96,
  QuotaExceeded: 0x97,
  PayloadFormatInvalid: 0x99,
  UseAnotherServer: 0x9c,
  SharedSubscriptionsNotSupported: 0x9e,
  ConnectionRateExceeded: 0x9f,
} as const;
export type ReasonCode = (typeof ReasonCode)[keyof typeof ReasonCode];

/**
 * The Reason String sent with a refusal to an MQTT 5 client that did not set Request Problem
 * Information to 0: short and fixed per code, so that it never carries what the log line does
 * (user names, addresses, limits' values).
 */
const REASON_STRINGS: Partial<Record<ReasonCode, string>> = {
  [ReasonCode.ClientIdentifierNotValid]: "client identifier not valid",
  [ReasonCode.BadUserNameOrPassword]: "bad user name or password",
  [ReasonCode.NotAuthorized]: "not authorized",
  [ReasonCode.ServerUnavailable]: "server unavailable, retry later",
  [ReasonCode.ServerBusy]: "server busy, retry later",
  [ReasonCode.Banned]: "temporarily banned, retry later",
  [ReasonCode.TopicFilterInvalid]: "topic filter not allowed",
  [ReasonCode.PacketTooLarge]: "packet too large",
  [ReasonCode.QuotaExceeded]: "quota exceeded",
  [ReasonCode.PayloadFormatInvalid]: "payload invalid",
  [ReasonCode.ConnectionRateExceeded]: "connection rate exceeded, retry later",
};

export function reasonStringFor(code: ReasonCode): string | undefined {
  return REASON_STRINGS[code];
}

/**
 * Refusals during CONNECT. Each maps to one MQTT 3.1.1 CONNACK return code in the hook
 * adapter and carries its MQTT 5 reason code; the message is for the log only and never
 * reaches the client.
 */
export class IdentifierRejectedError extends SluiceError {
  readonly reasonCode: ReasonCode = ReasonCode.ClientIdentifierNotValid;

  constructor(message: string) {
    super("IDENTIFIER_REJECTED", message);
  }
}

export class AuthError extends SluiceError {
  readonly reasonCode: ReasonCode = ReasonCode.BadUserNameOrPassword;

  constructor(message: string, options?: { cause?: unknown }) {
    super("BAD_CREDENTIALS", message, options);
  }
}

export class NotAuthorizedError extends SluiceError {
  readonly reasonCode: ReasonCode;

  /** `reasonCode`: Banned for a lockout or flapping, else Not authorized. */
  constructor(message: string, reasonCode: ReasonCode = ReasonCode.NotAuthorized) {
    super("NOT_AUTHORIZED", message);
    this.reasonCode = reasonCode;
  }
}

export class ServerUnavailableError extends SluiceError {
  readonly reasonCode: ReasonCode;

  /** `reasonCode`: Server busy (overload), Quota exceeded, Connection rate exceeded, ... */
  constructor(
    message: string,
    options?: { cause?: unknown },
    code = "SERVER_UNAVAILABLE",
    reasonCode: ReasonCode = ReasonCode.ServerUnavailable,
  ) {
    super(code, message, options);
    this.reasonCode = reasonCode;
  }
}

/**
 * Redis did not answer a command a client's request depends on (an outage, a failover): the
 * client is told to come back later (CONNACK 3), like any server-side unavailability.
 */
export class RedisUnavailableError extends ServerUnavailableError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options, "REDIS_UNAVAILABLE");
  }
}

/**
 * A PUBLISH the client may not make. MQTT 3.1.1 has no way to refuse one, so the message is
 * dropped while QoS 1/2 are still acknowledged; MQTT 5 acknowledges QoS 1/2 with `reasonCode`
 * (0x87 not authorized). The connection stays open.
 */
export class PublishDeniedError extends SluiceError {
  readonly reasonCode: ReasonCode;

  constructor(
    topic: string,
    code = "PUBLISH_DENIED",
    reasonCode: ReasonCode = ReasonCode.NotAuthorized,
  ) {
    super(code, `publish to ${topic} denied`);
    this.reasonCode = reasonCode;
  }
}

/** A PUBLISH over a quota of the client's: refused like a denied one, with 0x97 for MQTT 5. */
export class PublishQuotaExceededError extends PublishDeniedError {
  constructor(topic: string) {
    super(topic, "PUBLISH_QUOTA_EXCEEDED", ReasonCode.QuotaExceeded);
  }
}

/**
 * A PUBLISH whose payload a check refused (e.g. a schema the topic requires): refused like a
 * denied one, with 0x99 (payload format invalid) for MQTT 5.
 */
export class PayloadInvalidError extends PublishDeniedError {
  constructor(topic: string) {
    super(topic, "PAYLOAD_INVALID", ReasonCode.PayloadFormatInvalid);
  }
}

/** A packet broke the MQTT 3.1.1 rules; the connection is closed. */
export class ProtocolError extends SluiceError {
  constructor(message: string) {
    super("PROTOCOL_VIOLATION", message);
  }
}

/**
 * A connection on a PROXY protocol listener brought no usable header: a malformed or oversized
 * one (`invalid`), none within the deadline (`timeout`), or the peer left first (`closed`).
 */
export class ProxyHeaderError extends SluiceError {
  constructor(
    readonly kind: "invalid" | "timeout" | "closed",
    message: string,
  ) {
    super(`PROXY_HEADER_${kind.toUpperCase()}`, message);
  }
}
