import { createHash } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import { AuthError, IdentifierRejectedError, NotAuthorizedError, ReasonCode } from "../errors.js";
import type { AuditLog, AuditSubject, AuthFailureReason } from "./audit-log.js";
import type { AuthLockout } from "./auth-lockout.js";
import { normalizeSerial } from "./crl.js";
import { parseHash, verifyPassword } from "./password-hash.js";
import type { ScramCredential } from "./scram.js";

/** What a client presents on CONNECT. */
export interface Credentials {
  clientId: string;
  /** The client id was assigned by the broker (the CONNECT carried a zero-length one). */
  clientIdAssigned: boolean;
  username: string | undefined;
  password: Buffer | undefined;
  /** Present only when verified against the listener's CA. */
  peerCertificate: PeerCertificate | undefined;
  remoteAddress: string;
  listener: string;
  /** What an MQTT 5 enhanced authentication exchange (AUTH packets) decided, if there was one. */
  exchange?: AuthExchangeOutcome | undefined;
}

/** The outcome of an enhanced authentication exchange, which ran before the CONNECT came here. */
export interface AuthExchangeOutcome {
  method: string;
  /** The user the client named in the exchange. */
  username: string | undefined;
  verified: boolean;
  /** The method's reason for a refusal (SCRAM: malformed, unknown_user, bad_password). */
  reason: string | undefined;
}

/** Who a connected client is, for authorization and the audit log. */
export interface Identity {
  clientId: string;
  /** The authenticated name (`%u` in ACLs); undefined for an anonymous client. */
  username: string | undefined;
  method: "password" | "scram" | "certificate" | "anonymous";
  certificateCn?: string;
  certificateFingerprint?: string;
  /** Upper-case hex, for matching against CRLs on reload. */
  certificateSerial?: string;
  /** Set when the device registry vouched for this identity. */
  device?: {
    groups: readonly string[];
    /** The device's own publish limits, over `limits.publish` and its overrides. */
    limits?: { messagesPerSecond?: number | undefined; bytesPerSecond?: number | undefined };
    /** The credentials it connected with date from then: newer ones close this connection. */
    rotatedAt: string;
  };
}

/** The device registry as authentication sees it: a record per device id, or none. */
export interface DeviceDirectory {
  lookup(id: string): Promise<RegisteredDevice | undefined>;
}

export interface RegisteredDevice {
  id: string;
  enabled: boolean;
  passwordHash?: string | undefined;
  certificates: ReadonlyArray<{ serial: string }>;
  groups: readonly string[];
  limits?: { messagesPerSecond?: number | undefined; bytesPerSecond?: number | undefined };
  rotatedAt: string;
}

/** Verifies a username and password; satisfied by PasswordFile. */
export interface PasswordVerifier {
  verify(username: string, password: Buffer): Promise<boolean>;
  has(username: string): boolean;
  /** The user's SCRAM-SHA-256 verifier, when the entry is one. */
  scramCredential(username: string): ScramCredential | undefined;
}

/** Decides who a client is, or throws AuthError / NotAuthorizedError / IdentifierRejectedError. */
export interface Authenticator {
  authenticate(credentials: Credentials): Promise<Identity>;
}

export interface AuthenticatorSettings {
  allowAnonymous: boolean;
  certificateIdentity: "none" | "cn-is-clientid" | "cn-is-username";
  /** e.g. `%u` or `%u-*`: the client ids an identity may use. */
  clientIdPattern?: string | undefined;
  /** Read for every CONNECT so a reloaded password file takes effect at once. */
  passwords(): PasswordVerifier | undefined;
  /**
   * The device registry, consulted before the password file: a device it knows is
   * authenticated by its record alone (disabled means refused) and may only use its own id.
   */
  devices?: DeviceDirectory | undefined;
}

export interface AuthenticatorDeps {
  lockout: AuthLockout;
  audit: AuditLog;
  onFailure(reason: AuthFailureReason): void;
  /** Failures for one username over every address passed the alert threshold. */
  onUsernameTargeted(): void;
}

/** Refusals that count as guesses towards a lockout: policy refusals are no brute force. */
const GUESSES: ReadonlySet<AuthFailureReason> = new Set([
  "bad_password",
  "unknown_user",
  "missing_password",
  "auth_exchange_failed",
  "scram_not_enabled",
]);

/** A refusal and the reason the audit log and metrics record for it. */
class Refusal {
  constructor(
    readonly reason: AuthFailureReason,
    readonly error: Error,
  ) {}
}

/**
 * Establishes a client's identity on CONNECT: by verified client certificate, by password, or
 * as anonymous when allowed, then binds it to the client id. Deny by default: without any
 * configured method, only `allowAnonymous` lets anyone in. The client learns only the CONNACK
 * code; the reason goes to the audit log.
 */
export class SluiceAuthenticator implements Authenticator {
  private readonly clientIdMatcher: ((clientId: string, username: string) => boolean) | undefined;

  constructor(
    private readonly settings: AuthenticatorSettings,
    private readonly deps: AuthenticatorDeps,
  ) {
    this.clientIdMatcher =
      settings.clientIdPattern === undefined
        ? undefined
        : compileClientIdPattern(settings.clientIdPattern);
  }

  async authenticate(credentials: Credentials): Promise<Identity> {
    const subject: AuditSubject = {
      listener: credentials.listener,
      remoteAddress: credentials.remoteAddress,
      clientId: credentials.clientId,
      username: credentials.username,
    };
    const { lockout, audit } = this.deps;
    const certificate = this.certificateIdentity(credentials);
    // A verified certificate cannot be guessed: others' failures never lock its holder out.
    const guarded = certificate === undefined;
    // Checked before any hashing: a locked-out source costs no CPU.
    if (guarded && (await lockout.isLockedOut(credentials.remoteAddress, credentials.username))) {
      this.deps.onFailure("locked_out");
      audit.authFailed(subject, "locked_out");
      throw new NotAuthorizedError("locked out after repeated failures", ReasonCode.Banned);
    }
    const outcome = await this.identify(credentials, certificate);
    if (outcome instanceof Refusal) {
      this.deps.onFailure(outcome.reason);
      audit.authFailed(subject, outcome.reason);
      if (guarded && GUESSES.has(outcome.reason)) await this.recordGuess(credentials, subject);
      throw outcome.error;
    }
    if (outcome.method === "password" || outcome.method === "scram")
      await lockout.recordSuccess(credentials.remoteAddress, credentials.username);
    // Written out, not `{ ...subject, username }`: V8 clones a spread object and then adds or
    // replaces keys on a slow path (about 1.5 us, on every CONNECT).
    audit.authSucceeded(
      {
        listener: subject.listener,
        remoteAddress: subject.remoteAddress,
        clientId: subject.clientId,
        username: outcome.username,
        certificateCn: outcome.certificateCn,
        certificateFingerprint: outcome.certificateFingerprint,
      },
      outcome.method,
    );
    return outcome;
  }

  /** Counts a failed guess; the failure that reaches a limit says so, and is audited once. */
  private async recordGuess(credentials: Credentials, subject: AuditSubject): Promise<void> {
    const { lockout, audit } = this.deps;
    const outcome = await lockout.recordFailure(credentials.remoteAddress, credentials.username);
    if (outcome.addressLocked) audit.lockedOut(subject, "address", lockout.blockSeconds);
    if (outcome.usernameLockedAtAddress)
      audit.lockedOut(subject, "username_at_address", lockout.blockSeconds);
    if (outcome.usernameTargeted) {
      this.deps.onUsernameTargeted();
      audit.usernameTargeted(subject, lockout.usernameBlockedEverywhere);
    }
  }

  /**
   * A user's SCRAM-SHA-256 verifier, for an enhanced authentication exchange: the device
   * registry's record first (as for passwords), then the password file.
   */
  async scramCredential(username: string): Promise<ScramCredential | undefined> {
    const device = await this.settings.devices?.lookup(username);
    if (device !== undefined) {
      const hash = device.enabled && device.passwordHash ? parseHash(device.passwordHash) : "none";
      return typeof hash !== "string" && hash.kind === "scram-sha-256"
        ? hash.credential
        : undefined;
    }
    return this.settings.passwords()?.scramCredential(username);
  }

  private async identify(
    credentials: Credentials,
    certificate: Identity | undefined,
  ): Promise<Identity | Refusal> {
    if (credentials.exchange !== undefined)
      return this.exchanged(credentials, credentials.exchange);
    if (certificate) {
      const device = await this.settings.devices?.lookup(certificate.username as string);
      if (device === undefined) return this.bind(credentials, certificate);
      return this.bindDevice(credentials, this.certificateDevice(certificate, device));
    }

    const device =
      credentials.username === undefined
        ? undefined
        : await this.settings.devices?.lookup(credentials.username);
    if (device !== undefined) {
      return this.bindDevice(credentials, await this.passwordDevice(credentials, device));
    }

    const passwords = this.settings.passwords();
    if (credentials.username !== undefined && passwords) {
      if (credentials.password === undefined) {
        return new Refusal("missing_password", new AuthError("username without password"));
      }
      const known = passwords.has(credentials.username);
      // verify() costs the same for unknown users, so timing tells nothing either way.
      const valid = await passwords.verify(credentials.username, credentials.password);
      if (!valid) {
        return new Refusal(
          known ? "bad_password" : "unknown_user",
          new AuthError("bad username or password"),
        );
      }
      return this.bind(credentials, {
        clientId: credentials.clientId,
        username: credentials.username,
        method: "password",
      });
    }

    if (!this.settings.allowAnonymous) {
      return new Refusal("anonymous_refused", new NotAuthorizedError("anonymous access is off"));
    }
    // An unverified username is only a label: it must not select `user` ACL sections.
    if (this.clientIdMatcher && !credentials.clientIdAssigned) {
      // With identity binding on, an anonymous client could otherwise take any device's id.
      return new Refusal(
        "client_id_mismatch",
        new NotAuthorizedError("anonymous clients may not choose a client id"),
      );
    }
    return { clientId: credentials.clientId, username: undefined, method: "anonymous" };
  }

  /** A client that authenticated with AUTH packets: the exchange decided, the rules still bind. */
  private async exchanged(
    credentials: Credentials,
    exchange: AuthExchangeOutcome,
  ): Promise<Identity | Refusal> {
    const username = exchange.username;
    if (!exchange.verified || username === undefined) {
      if (exchange.reason === "bad_password") {
        return new Refusal("bad_password", new AuthError("bad username or password"));
      }
      if (exchange.reason !== "unknown_user" || username === undefined) {
        return new Refusal(
          "auth_exchange_failed",
          new AuthError(`${exchange.method} exchange failed`),
        );
      }
      const known =
        (await this.settings.devices?.lookup(username)) !== undefined ||
        this.settings.passwords()?.has(username) === true;
      return known
        ? new Refusal("scram_not_enabled", new AuthError("no SCRAM verifier for this user"))
        : new Refusal("unknown_user", new AuthError("bad username or password"));
    }
    const identity: Identity = { clientId: credentials.clientId, username, method: "scram" };
    const device = await this.settings.devices?.lookup(username);
    if (device === undefined) return this.bind(credentials, identity);
    if (!device.enabled) {
      return new Refusal("device_disabled", new NotAuthorizedError("device is disabled"));
    }
    return this.bindDevice(credentials, { ...identity, device: deviceFacts(device) });
  }

  /** A registered device that presents a certificate: it must be one the registry issued. */
  private certificateDevice(identity: Identity, device: RegisteredDevice): Identity | Refusal {
    if (!device.enabled) {
      return new Refusal("device_disabled", new NotAuthorizedError("device is disabled"));
    }
    // A device with certificates on record may use only those: any other, even from the
    // trusted CA, was replaced or never issued to it.
    if (
      device.certificates.length > 0 &&
      !device.certificates.some((c) => c.serial === identity.certificateSerial)
    ) {
      return new Refusal(
        "certificate_not_current",
        new NotAuthorizedError("certificate is not one the registry holds for this device"),
      );
    }
    return { ...identity, device: deviceFacts(device) };
  }

  /** A registered device that presents a password: checked against its record only. */
  private async passwordDevice(
    credentials: Credentials,
    device: RegisteredDevice,
  ): Promise<Identity | Refusal> {
    if (credentials.password === undefined) {
      return new Refusal("missing_password", new AuthError("username without password"));
    }
    if (!device.enabled) {
      return new Refusal("device_disabled", new NotAuthorizedError("device is disabled"));
    }
    const valid =
      device.passwordHash !== undefined &&
      (await verifyPassword(credentials.password, device.passwordHash));
    if (!valid) {
      return new Refusal("bad_password", new AuthError("bad username or password"));
    }
    return {
      clientId: credentials.clientId,
      username: device.id,
      method: "password",
      device: deviceFacts(device),
    };
  }

  /** A registered device connects with client id = username = its id, whatever else is set. */
  private bindDevice(credentials: Credentials, outcome: Identity | Refusal): Identity | Refusal {
    if (outcome instanceof Refusal) return outcome;
    if (credentials.clientId !== outcome.username) {
      return new Refusal(
        "client_id_mismatch",
        new NotAuthorizedError("a registered device must use its id as client id"),
      );
    }
    // Stricter than any clientIdPattern, which therefore does not apply.
    return outcome;
  }

  private certificateIdentity(credentials: Credentials): Identity | undefined {
    const mode = this.settings.certificateIdentity;
    const cert = credentials.peerCertificate;
    const cn = typeof cert?.subject?.CN === "string" ? cert.subject.CN : undefined;
    if (mode === "none" || !cert || !cn) return undefined;
    return {
      clientId: credentials.clientId,
      username: cn,
      method: "certificate",
      certificateCn: cn,
      certificateFingerprint: cert.fingerprint256 ?? fingerprint(cert),
      certificateSerial: normalizeSerial(cert.serialNumber ?? ""),
    };
  }

  /** Applies the client-id rules to an authenticated identity. */
  private bind(credentials: Credentials, identity: Identity): Identity | Refusal {
    if (
      this.settings.certificateIdentity === "cn-is-clientid" &&
      identity.method === "certificate"
    ) {
      if (credentials.clientId !== identity.username) {
        return new Refusal(
          "client_id_mismatch",
          new NotAuthorizedError("client id differs from certificate CN"),
        );
      }
    }
    if (this.clientIdMatcher && identity.username !== undefined) {
      if (credentials.clientIdAssigned) {
        return new Refusal(
          "identifier_rejected",
          new IdentifierRejectedError("a bound identity needs its client id"),
        );
      }
      if (!this.clientIdMatcher(credentials.clientId, identity.username)) {
        return new Refusal(
          "client_id_mismatch",
          new NotAuthorizedError("client id not allowed for this identity"),
        );
      }
    }
    return identity;
  }
}

function deviceFacts(device: RegisteredDevice): NonNullable<Identity["device"]> {
  return {
    groups: device.groups,
    rotatedAt: device.rotatedAt,
    ...(device.limits === undefined ? {} : { limits: device.limits }),
  };
}

function fingerprint(cert: PeerCertificate): string | undefined {
  return cert.raw ? createHash("sha256").update(cert.raw).digest("hex") : undefined;
}

/**
 * Compiles `auth.clientIdPattern`: `%u` is the identity, `*` any run of characters, anything
 * else literal. The identity is matched literally, never as a pattern.
 */
export function compileClientIdPattern(
  pattern: string,
): (clientId: string, username: string) => boolean {
  const parts = pattern.split(/(%u|\*)/).filter((p) => p !== "");
  return (clientId, username) => {
    const source = parts
      .map((part) =>
        part === "%u" ? escapeRegExp(username) : part === "*" ? ".*" : escapeRegExp(part),
      )
      .join("");
    return new RegExp(`^${source}$`, "s").test(clientId);
  };
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
