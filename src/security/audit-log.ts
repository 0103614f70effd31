import { FLAT_REDACTION, type Logger } from "../observability/logger.js";

/** Who a security event is about. Never carries passwords or payloads. */
export interface AuditSubject {
  listener?: string | undefined;
  remoteAddress?: string | undefined;
  clientId?: string | undefined;
  username?: string | undefined;
  certificateCn?: string | undefined;
  certificateFingerprint?: string | undefined;
}

export type AuthFailureReason =
  | "bad_password"
  | "unknown_user"
  | "missing_password"
  | "anonymous_refused"
  | "client_id_mismatch"
  | "session_owned_by_other"
  | "locked_out"
  | "identifier_rejected"
  | "device_disabled"
  | "certificate_not_current"
  | "auth_exchange_failed"
  | "scram_not_enabled"
  | "reauthentication_failed";

/**
 * One structured line per security event, on a logger of its own (`log: "audit"`) so that it
 * can be routed apart from operational logs. Each line has a stable `event`.
 */
export class AuditLog {
  private readonly log: Logger;

  constructor(root: Logger) {
    // Every field of an audit line is a string, number or boolean (the methods below build them).
    this.log = root.child({ log: "audit" }, { redact: FLAT_REDACTION });
  }

  authSucceeded(
    subject: AuditSubject,
    method: "password" | "scram" | "certificate" | "anonymous",
  ): void {
    this.log.info(
      { event: "audit.auth_succeeded", method, ...subject },
      "authentication succeeded",
    );
  }

  authFailed(subject: AuditSubject, reason: AuthFailureReason): void {
    this.log.warn(
      { event: "audit.auth_failed", reason, ...subject },
      `authentication failed: ${reason}`,
    );
  }

  /** Further attempts from the address, or for the username from that address, are refused. */
  lockedOut(
    subject: AuditSubject,
    scope: "address" | "username_at_address",
    blockSeconds: number,
  ): void {
    this.log.warn(
      { event: "audit.locked_out", scope, blockSeconds, ...subject },
      scope === "address"
        ? "further attempts from this address are locked out"
        : "further attempts for this username from this address are locked out",
    );
  }

  /** Failures for one username over every address passed the alert threshold. */
  usernameTargeted(subject: AuditSubject, blockedEverywhere: boolean): void {
    this.log.warn(
      { event: "audit.username_targeted", blockedEverywhere, ...subject },
      blockedEverywhere
        ? "repeated failures for this username from many addresses: locked out everywhere"
        : "repeated failures for this username from many addresses",
    );
  }

  aclDenied(subject: AuditSubject, action: "publish" | "subscribe" | "read", topic: string): void {
    this.log.warn({ event: "audit.acl_denied", action, topic, ...subject }, `${action} denied`);
  }

  /**
   * A PUBLISH under `spBv1.0/` or `$sparkplug/` refused by Sparkplug identity binding or payload
   * validation; `detail` is a fixed phrase of what the payload lacked, never its content.
   */
  sparkplugRefused(subject: AuditSubject, reason: string, topic: string, detail?: string): void {
    this.log.warn(
      { event: "audit.sparkplug_refused", reason, topic, detail, ...subject },
      `sparkplug publish refused: ${reason}`,
    );
  }

  takeover(subject: AuditSubject): void {
    this.log.info(
      { event: "audit.takeover", ...subject },
      "client id taken over by a new connection",
    );
  }

  /** A client went over a publish limit and its reading is paused (logged once per episode). */
  throttled(subject: AuditSubject, limit: string): void {
    this.log.warn({ event: "audit.throttled", limit, ...subject }, `client throttled: ${limit}`);
  }

  /** A throttled client is back under its limits. */
  unthrottled(subject: AuditSubject): void {
    this.log.info({ event: "audit.unthrottled", ...subject }, "client no longer throttled");
  }

  /** A client was disconnected or refused for abuse (flooding, flapping). */
  abuse(subject: AuditSubject, reason: string): void {
    this.log.warn(
      { event: "audit.abuse", reason, ...subject },
      `client refused for abuse: ${reason}`,
    );
  }

  revoked(subject: AuditSubject, reason: string): void {
    this.log.warn(
      { event: "audit.revoked", reason, ...subject },
      "connection closed: credentials revoked",
    );
  }

  /**
   * One line per admin API call: who did what to which device or session, and the outcome.
   * Refused credentials, rate limits and server faults are warnings; a caller's bad input (an
   * invalid, aborted or slow body, an unknown id) is its own business and stays at info.
   */
  adminRequest(call: {
    admin: string | undefined;
    remoteAddress: string | undefined;
    method: string;
    route: string;
    target?: string | undefined;
    status: number;
  }): void {
    const level = WARN_STATUSES.has(call.status) || call.status >= 500 ? "warn" : "info";
    this.log[level](
      { event: "audit.admin_request", ...call },
      `admin ${call.method} ${call.route}: ${call.status}`,
    );
  }

  /**
   * An admin created a device named like a user of the password file: the device, consulted
   * first, takes that name over (`replaced`), or the creation was refused.
   */
  passwordUserClash(call: {
    admin: string | undefined;
    remoteAddress: string | undefined;
    device: string;
    replaced: boolean;
  }): void {
    this.log.warn(
      { event: "audit.password_user_clash", ...call },
      call.replaced
        ? `device ${call.device} takes over the password file's user of that name`
        : `device ${call.device} refused: a password file user has that name`,
    );
  }
}

/** Admin API answers that are security events: no or a refused credential, too many calls. */
const WARN_STATUSES = new Set([401, 403, 429]);
