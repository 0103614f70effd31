/** Who holds a stored session: the username of the identity that made it (undefined: anonymous). */
export interface SessionHolder {
  username: string | undefined;
}

/**
 * Which client ids hold a persistent session (clean session 0) on this node, and for whom, so
 * that the CONNACK can say so even when the session has no subscriptions [MQTT-3.2.2-2] (aedes
 * alone only knows of sessions with subscriptions), and so that only the identity that made a
 * session may resume it.
 */
export class PersistentSessions {
  private readonly holders = new Map<string, SessionHolder>();

  /** The holder of the stored session of this client id, if there is one. */
  owner(clientId: string): SessionHolder | undefined {
    return this.holders.get(clientId);
  }

  /**
   * Records an accepted CONNECT and returns whether a persistent session already existed.
   * Clean session 1 discards any previous session [MQTT-3.1.2-6]. Call only after the client
   * is authenticated, or an impostor's refused CONNECT could wipe a device's session.
   */
  connect(clientId: string, clean: boolean, username: string | undefined): boolean {
    if (clean) {
      this.holders.delete(clientId);
      return false;
    }
    const existed = this.holders.has(clientId);
    this.holders.set(clientId, { username });
    return existed;
  }
}
