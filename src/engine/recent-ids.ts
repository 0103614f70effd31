/**
 * The envelope ids of the last `size` to `2 * size` messages received: two generations of a
 * Set, the older dropped whole when the newer is full. Replaces mqemitter-redis' LRU cache (an
 * LRU with a one-minute TTL, 10,000 ids), which cost 6 % of a subscribers' node's CPU at
 * QoS 1 (a clock read and list moves per lookup) for what a pair of Sets answers: was this
 * message seen under another matching subscription, or published again by a resend after a
 * failover?
 */
export class RecentIds {
  private current = new Set<string>();
  private previous = new Set<string>();

  constructor(private readonly size: number) {}

  /** Records `id`; false if it is among the recent ones already. */
  add(id: string): boolean {
    if (this.current.has(id) || this.previous.has(id)) return false;
    if (this.current.size >= this.size) {
      this.previous = this.current;
      this.current = new Set();
    }
    this.current.add(id);
    return true;
  }
}
