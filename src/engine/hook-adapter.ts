import type {
  AedesOptions,
  AedesPublishPacket,
  AuthenticateError,
  Client,
  ConnectPacket,
  PublishPacket,
  Subscription,
} from "aedes";
import {
  AuthError,
  IdentifierRejectedError,
  NotAuthorizedError,
  ProtocolError,
  PublishDeniedError,
  type ReasonCode,
  reasonStringFor,
  ServerUnavailableError,
} from "../errors.js";

/** A hook may answer synchronously (hot paths stay promise-free) or with a promise. */
type MaybePromise<T> = T | Promise<T>;

/**
 * Sluice's broker hooks, in our own terms: plain or async functions that throw catalogue errors.
 * aedes' callback-style hooks are adapted once, here, and nowhere else.
 */
export interface BrokerHooks {
  /** Before any CONNECT processing; throwing closes the connection without a CONNACK. */
  preConnect(client: Client, packet: ConnectPacket): MaybePromise<void>;
  /** On CONNECT; throw IdentifierRejectedError, AuthError, NotAuthorizedError or ServerUnavailableError. */
  authenticate(
    client: Client,
    username: string | undefined,
    password: Buffer | undefined,
  ): MaybePromise<void>;
  /** `client` is null for a will published by the broker on the client's behalf. */
  authorizePublish(client: Client | null, packet: PublishPacket): MaybePromise<void>;
  /**
   * Returns the subscription to grant (possibly with a lower QoS), or refuses it: with a reason
   * code (>= 0x80) that MQTT 5 clients get in the SUBACK, or null for 0x87 (not authorized).
   * MQTT 3.1.1 clients get 0x80 for any refusal.
   */
  authorizeSubscribe(
    client: Client,
    subscription: Subscription,
  ): MaybePromise<Subscription | ReasonCode | null>;
  /** Per delivery, synchronous: the packet to send to this client, or null to withhold it. */
  authorizeForward(client: Client, packet: AedesPublishPacket): AedesPublishPacket | null;
}

/** MQTT 3.1.1 CONNACK return codes for refusals [MQTT-3.2.2-6]. */
enum ConnackCode {
  IdentifierRejected = 2,
  ServerUnavailable = 3,
  BadUsernameOrPassword = 4,
  NotAuthorized = 5,
}

export function connackCodeFor(error: unknown): ConnackCode {
  if (error instanceof IdentifierRejectedError) return ConnackCode.IdentifierRejected;
  if (error instanceof AuthError) return ConnackCode.BadUsernameOrPassword;
  if (error instanceof NotAuthorizedError) return ConnackCode.NotAuthorized;
  if (error instanceof ServerUnavailableError) return ConnackCode.ServerUnavailable;
  // Anything unexpected is our fault, not the client's: tell it to come back later.
  return ConnackCode.ServerUnavailable;
}

/** What Sluice's aedes patch reads from a refusal, for MQTT 5 clients only. */
interface Refusal extends Error {
  reasonCode?: ReasonCode;
  /** Sent as the Reason String unless the client set Request Problem Information to 0. */
  reasonString?: string;
  /** A refused PUBLISH: acknowledged (with its reason code) and dropped, the connection kept. */
  drop?: boolean;
}

/** Gives a catalogue refusal its public Reason String (its message is for the log only). */
function withReasonString(refusal: Refusal): Refusal {
  if (refusal.reasonCode !== undefined) refusal.reasonString = reasonStringFor(refusal.reasonCode);
  return refusal;
}

export interface HookAdapterEvents {
  /** A hook threw something outside the catalogue: a bug or an outage worth an error log. */
  onUnexpectedError(hook: string, error: unknown): void;
}

type AedesHooks = Required<
  Pick<
    AedesOptions,
    "preConnect" | "authenticate" | "authorizePublish" | "authorizeSubscribe" | "authorizeForward"
  >
>;

function isPromise<T>(value: MaybePromise<T>): value is Promise<T> {
  return typeof (value as Promise<T> | undefined)?.then === "function";
}

/** Runs `fn`, delivering its sync or async outcome to a node-style callback exactly once. */
function settle<T>(fn: () => MaybePromise<T>, done: (error: unknown, value?: T) => void): void {
  let result: MaybePromise<T>;
  try {
    result = fn();
  } catch (error) {
    done(error);
    return;
  }
  if (isPromise(result)) result.then((value) => done(null, value), done);
  else done(null, result);
}

const CATALOGUED = [
  IdentifierRejectedError,
  AuthError,
  NotAuthorizedError,
  ServerUnavailableError,
  ProtocolError,
  PublishDeniedError,
];
const isCatalogued = (error: unknown): boolean => CATALOGUED.some((type) => error instanceof type);

export function adaptHooks(hooks: BrokerHooks, events: HookAdapterEvents): AedesHooks {
  const toError = (hook: string, error: unknown): Error => {
    if (!isCatalogued(error)) events.onUnexpectedError(hook, error);
    return error instanceof Error ? error : new Error(String(error));
  };
  const publishRefusal = (error: unknown): Error => {
    const refusal: Refusal = toError("authorizePublish", error);
    // Sluice's aedes patch acknowledges and drops instead of closing the connection. The
    // PUBACK/PUBREC carries the reason code alone: an empty Reason String stops aedes from
    // sending one (or the log message), and clients that read an acknowledgement as 2 to 4
    // bytes (Paho's test client) stop reading on a longer one.
    if (error instanceof PublishDeniedError) {
      refusal.reasonString = "";
      refusal.drop = true;
    }
    return refusal;
  };
  return {
    preConnect(client, packet, callback) {
      settle(
        () => hooks.preConnect(client, packet),
        (error) => (error ? callback(toError("preConnect", error), false) : callback(null, true)),
      );
    },
    authenticate(client, username, password, callback) {
      settle(
        () => hooks.authenticate(client, username ?? undefined, password ?? undefined),
        (error) => {
          if (!error) return callback(null, true);
          const refusal = withReasonString(toError("authenticate", error)) as AuthenticateError;
          refusal.returnCode = connackCodeFor(error) as number as AuthenticateError["returnCode"];
          callback(refusal, false);
        },
      );
    },
    // Per message: no closures allocated when the hook answers synchronously.
    authorizePublish(client, packet, callback) {
      let result: MaybePromise<void>;
      try {
        result = hooks.authorizePublish(client, packet);
      } catch (error) {
        callback(publishRefusal(error));
        return;
      }
      if (isPromise(result))
        result.then(
          () => callback(null),
          (error) => callback(publishRefusal(error)),
        );
      else callback(null);
    },
    authorizeSubscribe(client, subscription, callback) {
      settle(
        () => hooks.authorizeSubscribe(client, subscription),
        (error, granted) => {
          if (error) return callback(toError("authorizeSubscribe", error));
          // A reason code is no object, which aedes reads as a refusal (the patch sends its code).
          callback(null, (granted ?? null) as Subscription | null);
        },
      );
    },
    // Per delivery and already synchronous in aedes' terms: handed over as it is, not wrapped.
    authorizeForward: hooks.authorizeForward,
  };
}
