import type { UsernameQuota } from "./cluster-connection-counts.js";
import type { FlappingGuard } from "./flapping-guard.js";

/** Why a CONNECT was answered CONNACK 3; becomes a metric label. */
export type ConnectRejection = "overload" | "flapping" | "banned" | "per_username";

/**
 * The quotas checked on a CONNECT, where the client id and identity are known: overload before
 * any authentication work, then (once authenticated, so that nobody can get a device's id
 * banned by connecting in its name) flapping and connections per username.
 */
export class ConnectAdmission {
  constructor(
    private readonly parts: {
      isOverloaded(): boolean;
      flapping?: FlappingGuard | undefined;
      usernames?: UsernameQuota | undefined;
    },
  ) {}

  beforeAuthentication(): ConnectRejection | undefined {
    return this.parts.isOverloaded() ? "overload" : undefined;
  }

  /**
   * Counts the CONNECT against the flapping limit and, when it has a username and that quota is
   * set, against the username's connections (both at once: one round trip to Redis). When it
   * resolves `counted: true` the username's count must be released when the connection ends.
   */
  async afterAuthentication(
    clientId: string,
    username: string | undefined,
  ): Promise<{ rejection: ConnectRejection | undefined; counted: boolean }> {
    const { flapping, usernames } = this.parts;
    const [flap, claimed] = await Promise.all([
      flapping?.check(clientId),
      username === undefined || usernames === undefined ? undefined : usernames.claim(username),
    ]);
    const counted = claimed === true;
    if (flap !== undefined) return { rejection: flap, counted };
    if (claimed === false) return { rejection: "per_username", counted };
    return { rejection: undefined, counted };
  }

  release(username: string): void {
    this.parts.usernames?.release(username);
  }
}
