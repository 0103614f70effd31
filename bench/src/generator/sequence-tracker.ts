/**
 * Which sequence numbers of one publisher a subscription has received: a growable bitmap, so
 * a duplicate is told from a first delivery in O(1) and losses are counted at the end.
 */
export class SequenceTracker {
  private bits = new Uint8Array(1024);
  private distinctCount = 0;
  private duplicateCount = 0;
  private highestSeen = -1;

  /** Records a delivery; returns false when that sequence number was already seen. */
  record(sequence: number): boolean {
    const byte = sequence >>> 3;
    if (byte >= this.bits.length) this.grow(byte);
    const mask = 1 << (sequence & 7);
    const bits = this.bits;
    const current = bits[byte] ?? 0;
    if ((current & mask) !== 0) {
      this.duplicateCount++;
      return false;
    }
    bits[byte] = current | mask;
    this.distinctCount++;
    if (sequence > this.highestSeen) this.highestSeen = sequence;
    return true;
  }

  get distinct(): number {
    return this.distinctCount;
  }

  /** The highest sequence number received, -1 before the first. */
  get highest(): number {
    return this.highestSeen;
  }

  get duplicates(): number {
    return this.duplicateCount;
  }

  /** Sequence numbers below `published` never received. */
  lost(published: number): number {
    let missing = 0;
    for (let sequence = 0; sequence < published; sequence++) {
      const byte = this.bits[sequence >>> 3] ?? 0;
      if ((byte & (1 << (sequence & 7))) === 0) missing++;
    }
    return missing;
  }

  private grow(byte: number): void {
    let size = this.bits.length;
    while (size <= byte) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.bits);
    this.bits = next;
  }
}
