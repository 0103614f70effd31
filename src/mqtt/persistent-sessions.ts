/**
 * Which client ids hold a persistent session (clean session 0) on this node, so the CONNACK can
 * say so even when the session has no subscriptions [MQTT-3.2.2-2]; aedes alone only knows
 * of sessions that have subscriptions.
 */
export class PersistentSessions {
  private readonly ids = new Set<string>();

  /**
   * Records an accepted CONNECT and returns whether a persistent session already existed.
   * Clean session 1 discards any previous session [MQTT-3.1.2-6]. Call only after the client
   * is authenticated, or an impostor's refused CONNECT could wipe a device's session.
   */
  connect(clientId: string, clean: boolean): boolean {
    if (clean) {
      this.ids.delete(clientId);
      return false;
    }
    const existed = this.ids.has(clientId);
    this.ids.add(clientId);
    return existed;
  }
}
