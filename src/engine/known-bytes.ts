/**
 * Runs of bytes read before (field names, topics, broker and client ids), each kept in a slot
 * with what was made of it, to recognize them where they come again: compared four bytes at a
 * time through a DataView. A byte loop over a Buffer cost 2.2 ns per byte here, one over a
 * string's char codes 4; an envelope's names and repeated values are about 150 bytes.
 *
 * Every slot's bytes lie in one Int32Array, at a fixed stride: no object per slot to follow
 * (nor to allocate when a slot changes) on a subscribers' node's hottest path, where its data
 * is seldom in the CPU's cache.
 */
export class KnownBytesTable<T> {
  /** Each slot's bytes as big-endian 32-bit words (as DataView#getInt32 reads them). */
  private readonly words: Int32Array;
  /** Each slot's length in bytes, -1 when empty. */
  private readonly lengths: Int32Array;
  /** Each slot's last 0-3 bytes past its words, as one number. */
  private readonly tails: Int32Array;
  private readonly values: Array<T | undefined>;
  private readonly stride: number;

  /** `slots` slots of at most `maxBytes` bytes each. */
  constructor(
    slots: number,
    readonly maxBytes: number,
  ) {
    this.stride = maxBytes >>> 2;
    this.words = new Int32Array(slots * this.stride);
    this.lengths = new Int32Array(slots).fill(-1);
    this.tails = new Int32Array(slots);
    this.values = new Array<T | undefined>(slots).fill(undefined);
  }

  /**
   * What `slot` keeps if its bytes are the `length` bytes at `offset` of the reader's Buffer
   * (the caller checked that they are there); undefined otherwise.
   */
  find(slot: number, reader: BufferReader, offset: number, length: number): T | undefined {
    if (this.lengths[slot] !== length) return undefined;
    const view = reader.view;
    const at = reader.base + offset;
    const count = length >>> 2;
    const first = slot * this.stride;
    const words = this.words;
    for (let i = 0; i < count; i++) {
      if (view.getInt32(at + i * 4) !== words[first + i]) return undefined;
    }
    let tail = 0;
    for (let i = count * 4; i < length; i++) tail = (tail << 8) | view.getUint8(at + i);
    return tail === this.tails[slot] ? this.values[slot] : undefined;
  }

  /** What `first` or `second` keeps for these bytes (see find). */
  findEither(
    first: number,
    second: number,
    reader: BufferReader,
    offset: number,
    length: number,
  ): T | undefined {
    return this.find(first, reader, offset, length) ?? this.find(second, reader, offset, length);
  }

  /**
   * Keeps `value` in an empty one of its two slots if there is one, else in `first` (what that
   * held may live on in its own other slot).
   */
  keepEither(
    first: number,
    second: number,
    data: Uint8Array,
    start: number,
    length: number,
    value: T,
  ): void {
    const slot = this.holds(first) && !this.holds(second) ? second : first;
    this.keep(slot, data, start, length, value);
  }

  /** Whether `slot` keeps anything. */
  holds(slot: number): boolean {
    return (this.lengths[slot] as number) >= 0;
  }

  /** Keeps `value` in `slot` for the `length` bytes at `start` of `data` (at most maxBytes). */
  keep(slot: number, data: Uint8Array, start: number, length: number, value: T): void {
    if (length > this.maxBytes) throw new RangeError(`at most ${this.maxBytes} bytes a slot`);
    const count = length >>> 2;
    const first = slot * this.stride;
    for (let i = 0; i < count; i++) {
      const at = start + i * 4;
      this.words[first + i] =
        ((data[at] as number) << 24) |
        ((data[at + 1] as number) << 16) |
        ((data[at + 2] as number) << 8) |
        (data[at + 3] as number);
    }
    let tail = 0;
    for (let i = count * 4; i < length; i++) tail = (tail << 8) | (data[start + i] as number);
    this.tails[slot] = tail;
    this.lengths[slot] = length;
    this.values[slot] = value;
  }
}

/**
 * A DataView over the memory of the Buffers read one after another, made again only when the
 * next Buffer lies in other memory (a subscription's messages are views of one socket read).
 */
export class BufferReader {
  view: DataView<ArrayBufferLike> = new DataView(new ArrayBuffer(0));
  /** Where the current Buffer starts in the view. */
  base = 0;
  private memory: ArrayBufferLike = this.view.buffer;
  /** The Buffer read last: the messages of one read come one after another in it. */
  private current: Buffer | undefined;

  /** Reads `buffer` from now on. */
  use(buffer: Buffer): void {
    // a Buffer's memory and offset never change: asking for them again (1 % of a subscribers'
    // node's CPU, once per message) is needed only for another Buffer
    if (buffer === this.current) return;
    this.current = buffer;
    if (buffer.buffer !== this.memory) {
      this.memory = buffer.buffer;
      this.view = new DataView(buffer.buffer);
    }
    this.base = buffer.byteOffset;
  }
}
