/** Sequence numbers remembered per origin: the last this many below its highest. */
const WINDOW = 1 << 16;
/** Origins remembered; past it the oldest is forgotten (a node restarted has a new one). */
const MAX_ORIGINS = 1024;
/** Base 36 digits of a safe integer: at most 10 (36^10 < 2^53). */
const MAX_DIGITS = 10;
const COLON = 0x3a;

/** The recent sequence numbers of one origin: bits of a ring over (highest - WINDOW, highest]. */
interface OriginWindow {
  readonly prefix: Buffer;
  highest: number;
  readonly bits: Uint32Array;
}

/**
 * The envelope ids of recent messages: was this message seen under another matching
 * subscription, or published again by a resend after a failover?
 *
 * Ids a node numbers (`<origin>:<sequence in base 36>`, local-first.ts), the usual case, are
 * read from their bytes with no string made: per origin, a ring of bits over its last 65,536
 * sequence numbers (a node's PUBLISHes reach Redis, and so this node, in the order they are
 * numbered, so a copy is within it). Any other id, and a numbered one older than its window,
 * goes to two generations of a Set of the last `size` to `2 * size` such ids, the older
 * dropped whole when the newer is full. Replaces mqemitter-redis' LRU cache (an LRU with a
 * one-minute TTL, 10,000 ids), which cost 6 % of a subscribers' node's CPU at QoS 1; the Set
 * of every id cost 3 to 5 %.
 */
export class RecentIds {
  private current = new Set<string>();
  private previous = new Set<string>();
  private readonly origins = new Map<string, OriginWindow>();
  /** The origin of the last numbered id: most come from the same node as the one before. */
  private last: OriginWindow | undefined;

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

  /**
   * Records the id whose UTF-8 bytes are `bytes[start, end)` when it is numbered and within its
   * origin's window: false if it is among the recent ones already, true if not. undefined,
   * having recorded nothing, for any other id: that one is for add(), as a string.
   */
  addNumbered(bytes: Buffer, start: number, end: number): boolean | undefined {
    // the sequence: base 36 digits after the last colon, no leading zero (one spelling each)
    let at = end;
    while (at > start && isBase36(bytes[at - 1] as number)) at--;
    const digits = end - at;
    if (
      digits === 0 ||
      digits > MAX_DIGITS ||
      at - 1 <= start ||
      bytes[at - 1] !== COLON ||
      (digits > 1 && bytes[at] === 0x30)
    ) {
      return undefined;
    }
    let sequence = 0;
    for (let i = at; i < end; i++) sequence = sequence * 36 + base36Value(bytes[i] as number);
    const window = this.originOf(bytes, start, at);
    if (sequence <= window.highest - WINDOW) return undefined;
    return addSequence(window, sequence);
  }

  private originOf(bytes: Buffer, start: number, end: number): OriginWindow {
    const last = this.last;
    if (last !== undefined && samePrefix(bytes, start, end, last.prefix)) return last;
    const key = bytes.toString("latin1", start, end);
    let window = this.origins.get(key);
    if (window === undefined) {
      if (this.origins.size >= MAX_ORIGINS) {
        const oldest = this.origins.keys().next().value as string;
        this.origins.delete(oldest);
      }
      window = {
        prefix: Buffer.from(bytes.subarray(start, end)),
        highest: -1,
        bits: new Uint32Array(WINDOW / 32),
      };
      this.origins.set(key, window);
    }
    this.last = window;
    return window;
  }
}

/** Records `sequence` (within the window or above it); false if it was recorded already. */
function addSequence(window: OriginWindow, sequence: number): boolean {
  const { bits } = window;
  if (sequence > window.highest) {
    // the slots of the numbers skipped over now stand for new ones: cleared
    if (window.highest < 0 || sequence - window.highest >= WINDOW) bits.fill(0);
    else clearRange(bits, window.highest + 1, sequence);
    window.highest = sequence;
    setBit(bits, sequence);
    return true;
  }
  const slot = sequence & (WINDOW - 1);
  const mask = 1 << (slot & 31);
  const word = slot >>> 5;
  if (((bits[word] as number) & mask) !== 0) return false;
  bits[word] = (bits[word] as number) | mask;
  return true;
}

function setBit(bits: Uint32Array, sequence: number): void {
  const slot = sequence & (WINDOW - 1);
  bits[slot >>> 5] = (bits[slot >>> 5] as number) | (1 << (slot & 31));
}

/** Clears the slots of the numbers `from` to `to` (exclusive), fewer than WINDOW of them. */
function clearRange(bits: Uint32Array, from: number, to: number): void {
  let n = from;
  for (; n < to && (n & 31) !== 0; n++) clearBit(bits, n);
  for (; n + 32 <= to; n += 32) bits[(n & (WINDOW - 1)) >>> 5] = 0;
  for (; n < to; n++) clearBit(bits, n);
}

function clearBit(bits: Uint32Array, sequence: number): void {
  const slot = sequence & (WINDOW - 1);
  bits[slot >>> 5] = (bits[slot >>> 5] as number) & ~(1 << (slot & 31));
}

function isBase36(byte: number): boolean {
  return (byte >= 0x30 && byte <= 0x39) || (byte >= 0x61 && byte <= 0x7a);
}

function base36Value(byte: number): number {
  return byte <= 0x39 ? byte - 0x30 : byte - 0x61 + 10;
}

function samePrefix(bytes: Buffer, start: number, end: number, prefix: Buffer): boolean {
  if (end - start !== prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[start + i] !== prefix[i]) return false;
  return true;
}
