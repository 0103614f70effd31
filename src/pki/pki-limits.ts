import { PkiInputError } from "./pki-error.js";

/** Bounds on certificate lifetimes, in days. */
export const DEVICE_VALIDITY_DAYS = {
  /** One hour: shorter lifetimes are indistinguishable from clock skew between sites. */
  min: 1 / 24,
  /** The CA/Browser Forum's historical maximum; long-lived device keys belong in a HSM. */
  max: 825,
  default: 90,
} as const;

export const CA_VALIDITY_DAYS = { min: 1, max: 36500, default: 3650 } as const;

/** How far back notBefore is set, so a device whose clock is slightly behind still accepts it. */
export const CLOCK_SKEW_MS = 5 * 60 * 1000;

/**
 * The largest PEM text accepted from outside, per kind. They are generous for the largest key
 * we accept (RSA 8192) and keep a hostile request from making us parse megabytes of ASN.1.
 */
export const PEM_MAX_BYTES = {
  csr: 16 * 1024,
  certificate: 16 * 1024,
  privateKey: 16 * 1024,
  chain: 64 * 1024,
} as const;

export const CRL_NEXT_UPDATE_HOURS = { min: 1, max: 24 * 366, default: 24 * 30 } as const;

/** Checks a lifetime against bounds; `what` names it in the error ("device validity"). */
export function validateDays(
  days: unknown,
  bounds: { min: number; max: number },
  what: string,
): number {
  if (typeof days !== "number" || !Number.isFinite(days)) {
    throw new PkiInputError(`${what} must be a number of days`);
  }
  if (days < bounds.min || days > bounds.max) {
    throw new PkiInputError(
      `${what} must be between ${formatDays(bounds.min)} and ${formatDays(bounds.max)}, not ${formatDays(days)}`,
    );
  }
  return days;
}

export function validateHours(
  hours: unknown,
  bounds: { min: number; max: number },
  what: string,
): number {
  if (
    typeof hours !== "number" ||
    !Number.isFinite(hours) ||
    hours < bounds.min ||
    hours > bounds.max
  ) {
    throw new PkiInputError(`${what} must be between ${bounds.min} and ${bounds.max} hours`);
  }
  return hours;
}

function formatDays(days: number): string {
  return days < 1 ? `${Math.round(days * 24 * 60) / 60} hours` : `${days} days`;
}
