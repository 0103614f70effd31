import type { Duplex } from "node:stream";
import { fixedHeaderBytes } from "./mqtt-lengths.js";

/**
 * Stops reading a client's connection at a PUBLISH (or, for the subscribe pacer, a SUBSCRIBE),
 * from inside aedes' per-client parser: the way Sluice throttles. Like the packet guard
 * (mqtt/packet-guard.ts), it wraps methods of the client's own parser instance (and its
 * stream's `read`), never a shared prototype.
 *
 * How aedes reads: on 'readable' and whenever every packet of the previous read has been
 * handled, it calls `conn.read(null)` and feeds the whole buffer to mqtt-packet's parser, which
 * emits one 'packet' per complete packet from `_newPacket`.
 *
 * The gate asks `admit` before a PUBLISH leaves the parser. When the answer is no:
 * - `_newPacket` returns false: the parser stops with that PUBLISH parsed but not emitted, and
 *   the bytes after it unparsed in its buffer. Nothing after it reaches aedes, so the order of
 *   every packet (PUBLISH, PUBACK, SUBSCRIBE, ...) is kept, and nothing is acknowledged that
 *   was not handed on: the held PUBLISH gets its PUBACK only once admitted and published.
 * - `conn.read` returns nothing: the stream's buffer fills to its high-water mark, the socket
 *   stops reading (for WebSocket, `ws` pauses the raw socket), and TCP flow control slows the
 *   sender. aedes would otherwise keep reading on every 'readable' event.
 * `resume()` lifts the gate and runs the parser again from the held PUBLISH, which is asked
 * about again; once the parser's buffer is handled, aedes reads the socket as usual.
 *
 * Only packets parsed from the network pass the gate: wills and $SYS messages the broker
 * publishes itself do not.
 */

export interface PublishAdmission {
  /**
   * Whether a PUBLISH of `bytes` (whole packet, as on the wire) may go on now. false holds it,
   * and the caller must call the gate's `resume()` later (and only then).
   */
  admit(bytes: number): boolean;
}

export interface ReadGate {
  /** Lifts the gate after a refusal and offers the held PUBLISH again. */
  resume(): void;
  /** Whether a PUBLISH is held. */
  readonly holding: boolean;
}

interface ParserInternals {
  packet: { cmd?: string; length: number };
  _newPacket(): boolean;
  parse(buf: Buffer): number;
}

interface ClientInternals {
  _parser?: unknown;
  conn?: unknown;
  closed?: boolean;
}

function isParser(value: unknown): value is ParserInternals {
  const p = value as Partial<ParserInternals> | null;
  return typeof p?._newPacket === "function" && typeof p.parse === "function";
}

function isReadable(value: unknown): value is Duplex {
  return typeof (value as Partial<Duplex> | null)?.read === "function";
}

const NOTHING = Buffer.alloc(0);

/** Packets a gate can hold. */
export type GatedCommand = "publish" | "subscribe";

/**
 * Installs the gate on an aedes client, asking `admission` before each `command` packet.
 * Throws at once if the engine's parser or connection no longer has the expected shape.
 */
export function installReadGate(
  client: object,
  admission: PublishAdmission,
  command: GatedCommand = "publish",
): ReadGate {
  const internals = client as ClientInternals;
  const parser = internals._parser;
  const conn = internals.conn;
  if (!isParser(parser) || !isReadable(conn)) {
    throw new TypeError(
      "aedes client parser or connection has an unexpected shape: publish limits cannot be installed",
    );
  }
  let holding = false;

  const newPacket = parser._newPacket;
  parser._newPacket = function admitThenEmit(this: ParserInternals) {
    if (this.packet.cmd === command) {
      const bytes = this.packet.length + fixedHeaderBytes(this.packet.length);
      if (!admission.admit(bytes)) {
        holding = true;
        return false;
      }
    }
    return newPacket.call(this);
  };

  const read = conn.read;
  // read(0) is the stream's own "fill the buffer" call: harmless, it stops at the high-water mark.
  conn.read = function readUnlessHolding(this: Duplex, size?: number) {
    if (holding && size !== 0) return null;
    return read.call(this, size);
  };

  return {
    get holding() {
      return holding;
    },
    resume() {
      if (!holding) return;
      holding = false;
      if (internals.closed === true) return;
      parser.parse(NOTHING);
    },
  };
}
