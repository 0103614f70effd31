import type { PeerCertificate } from "node:tls";
import { NotAuthorizedError } from "../errors.js";

/** What a client presents on CONNECT. */
export interface Credentials {
  clientId: string;
  username: string | undefined;
  password: Buffer | undefined;
  /** Present only when verified against the listener's CA. */
  peerCertificate: PeerCertificate | undefined;
  remoteAddress: string;
}

/** Who a connected client is, for authorization and the audit log. */
export interface Identity {
  clientId: string;
  /** The authenticated user name; undefined for an anonymous client. */
  username: string | undefined;
  anonymous: boolean;
}

/** Decides who a client is, or throws AuthError / NotAuthorizedError. */
export interface Authenticator {
  authenticate(credentials: Credentials): Identity | Promise<Identity>;
}

/**
 * The only policy until password files and certificates land: anonymous clients are let in
 * when `auth.allowAnonymous` is on, and everyone is refused otherwise (deny by default).
 */
export class AnonymousAuthenticator implements Authenticator {
  constructor(private readonly allowAnonymous: boolean) {}

  authenticate(credentials: Credentials): Identity {
    if (!this.allowAnonymous) {
      throw new NotAuthorizedError(
        "anonymous access is off and no authentication method is configured",
      );
    }
    // With anonymous access on and nothing to check against, a user name is a label only.
    return { clientId: credentials.clientId, username: credentials.username, anonymous: true };
  }
}
