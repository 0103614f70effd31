import {
  effectiveRates,
  type PublishLimitsConfig,
  type PublishRates,
} from "../config/publish-limits-schema.js";

/** Who is publishing, as far as publish limits care. */
export interface PublisherIdentity {
  clientId: string;
  /** The authenticated username; undefined for anonymous clients. */
  username: string | undefined;
  /** A registered device's own limits, over any override in the config. */
  device?: { limits?: DeviceRates | undefined } | undefined;
}

/** The rates a device record may set for itself. */
export interface DeviceRates {
  messagesPerSecond?: number | undefined;
  bytesPerSecond?: number | undefined;
}

/**
 * One set of effective limits: the base block ("0"), an override ("1".."n") or a device's own
 * rates ("d<messages>/<bytes>").
 */
export interface PublishProfile {
  readonly key: string;
  readonly rates: PublishRates;
}

/**
 * The key a budget is shared under: the username when there is one, so that every connection
 * of one account (several devices, or one device reconnecting, on any node) draws from one
 * budget and opening more connections does not multiply the limit; otherwise the client id,
 * which names one connection at a time cluster-wide. The prefixes keep a username and a client
 * id that happen to be equal apart.
 */
export function budgetKey(identity: PublisherIdentity): string {
  return identity.username !== undefined ? `u:${identity.username}` : `c:${identity.clientId}`;
}

/** `*` matches any run of characters; everything else literally. */
function globMatcher(pattern: string): (value: string) => boolean {
  const source = pattern
    .split("*")
    .map((part) => part.replace(/[\\^$.|?+()[\]{}]/g, "\\$&"))
    .join(".*");
  const regex = new RegExp(`^${source}$`, "s");
  return (value) => regex.test(value);
}

/**
 * Chooses the limits for a connection: the first override matching its username (exactly) or
 * its client id (glob), else the base block.
 */
export class PublishProfiles {
  private readonly base: PublishProfile;
  private readonly overrides: Array<{
    profile: PublishProfile;
    matches(identity: PublisherIdentity): boolean;
  }>;

  /** Profiles of device records' rates, shared by devices with the same rates. */
  private readonly deviceProfiles = new Map<string, PublishProfile>();

  constructor(config: PublishLimitsConfig) {
    const { overrides, ...base } = config;
    this.base = { key: "0", rates: base };
    this.overrides = overrides.map(({ username, clientId, ...rates }, i) => {
      const profile = { key: String(i + 1), rates };
      if (username !== undefined)
        return { profile, matches: (identity) => identity.username === username };
      const matchesClientId = globMatcher(clientId ?? "");
      return { profile, matches: (identity) => matchesClientId(identity.clientId) };
    });
  }

  for(identity: PublisherIdentity): PublishProfile {
    const own = identity.device?.limits;
    if (
      own !== undefined &&
      (own.messagesPerSecond !== undefined || own.bytesPerSecond !== undefined)
    ) {
      return this.deviceProfile(own);
    }
    for (const override of this.overrides) {
      if (override.matches(identity)) return override.profile;
    }
    return this.base;
  }

  private deviceProfile(own: DeviceRates): PublishProfile {
    const key = `d${own.messagesPerSecond ?? ""}/${own.bytesPerSecond ?? ""}`;
    let profile = this.deviceProfiles.get(key);
    if (profile === undefined) {
      profile = { key, rates: effectiveRates(own, this.base.rates) };
      // Few distinct rates in practice; bounded all the same.
      if (this.deviceProfiles.size >= 10_000) this.deviceProfiles.clear();
      this.deviceProfiles.set(key, profile);
    }
    return profile;
  }
}
