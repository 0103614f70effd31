import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { ReasonCode } from "../errors.js";
import { readConnectHead, refusalConnack } from "../protocol/refusal-connack.js";
import type { SocketRejection } from "./connection-quotas.js";

/**
 * What became of a refused socket that could have been answered: `answered` (its CONNECT got
 * the refusal's CONNACK), `dropped` (closed at once: a bound was reached or the node is
 * overloaded), `unread` (no CONNECT within the byte cap and the deadline, a malformed one, or a
 * TLS handshake or WebSocket upgrade that did not complete).
 */
export type RefusalOutcome = "answered" | "dropped" | "unread";

/** Why a socket is refused, as its CONNACK says it. */
export interface Refusal {
  code: ReasonCode;
}

/**
 * A refused socket that has a place among those being answered. The listener hands it the
 * socket's MQTT byte stream once there is one: the socket itself on plain TCP, the TLS socket
 * after the handshake, the WebSocket's stream after the upgrade. Until then, and after, the
 * deadline runs from the refusal; the place is given back when the raw socket closes.
 */
export interface RefusalReply {
  answer(stream: Duplex): void;
}

export interface RefusalAnswerSettings {
  /** Refused sockets being answered at once on the node; past it they are dropped. */
  maxAnswering: number;
  /** The same, per client address, so that one address cannot take every place. */
  maxAnsweringPerAddress: number;
  /** Refusals answered per second on the node (a fixed one-second window); past it, dropped. */
  maxAnswersPerSecond: number;
  /** A CONNECT longer than this is not answered. */
  maxConnectBytes: number;
  /** From the refusal to the close, answered or not. */
  deadlineMs: number;
}

/**
 * The bounds on plain TCP. Places: 64 hold at most 64 sockets, timers and 512-byte buffers, and
 * a flood of silent sockets that fills them leaves later refusals dropped at once, the cost of
 * a refusal without an answer. Two per address: a device retries one connection at a time, and
 * a site behind one NAT rarely has more refused at the same moment. Rate: at a steady pace an
 * answer cost the node 100-200 us of CPU more than a drop (bench/refusal-cost.ts, 2 cores,
 * loopback: reading the CONNECT, writing, and the client's close are wake-ups a drop never
 * has), so 200 answers a second cost at most 2-4 % of a core more than dropping, however fast
 * the flood comes; refused devices retry after seconds, so that still answers several hundred
 * of them per node each second.
 */
export const REFUSAL_ANSWER_BOUNDS = {
  maxAnswering: 64,
  maxAnsweringPerAddress: 2,
  maxAnswersPerSecond: 200,
  maxConnectBytes: 512,
  /** Capped by `limits.connectTimeoutMs`: a client sends its CONNECT one round trip after connecting. */
  deadlineMs: 2_000,
} as const;

/**
 * The bounds on `tls`, `ws` and `wss`, one budget for the three, where an answer pays for a TLS
 * handshake or an HTTP upgrade first. Paced under the budget, an answered refusal cost the node
 * 1.5-1.8 ms of CPU over TLS and 1.8-1.9 ms over WebSocket, against 0.67-0.78 ms for one dropped
 * before its handshake or request (bench/refusal-cost.ts with REFUSAL_TRANSPORT=tls or ws, ECDSA
 * P-256, 2 cores, load 9-14; the idle node's own timers are in all): 0.8-1.2 ms more per answer,
 * five to ten times a plain answer's 0.1-0.2 ms. So a tenth of the plain rate, 20 a second,
 * costs about 2 % of a core (up to 4 % on `wss`, which pays both), as 200 do on plain TCP. 16
 * places and one per address: a socket in its handshake holds more memory than a plain one, and
 * a device retries one connection at a time. The deadline covers the handshake.
 */
export const HANDSHAKE_REFUSAL_ANSWER_BOUNDS = {
  maxAnswering: 16,
  maxAnsweringPerAddress: 1,
  maxAnswersPerSecond: 20,
  maxConnectBytes: 512,
  deadlineMs: 2_000,
} as const;

/** The MQTT 5 CONNACK reason code of each socket quota (3.1.1 clients get return code 3). */
const REJECTION_REFUSAL: Record<SocketRejection, Refusal> = {
  rate: { code: ReasonCode.ConnectionRateExceeded },
  per_ip: { code: ReasonCode.QuotaExceeded },
  per_node: { code: ReasonCode.QuotaExceeded },
  cluster: { code: ReasonCode.QuotaExceeded },
};

export function quotaRefusal(rejection: SocketRejection): Refusal {
  return REJECTION_REFUSAL[rejection];
}

/**
 * Tells a refused client why, when that is affordable: its CONNECT is read, byte-capped and
 * within a deadline, and answered with a CONNACK (for MQTT 5 the refusal's reason code, for
 * 3.1.1 return code 3), then the socket is closed. Nothing else happens for such a socket: no
 * engine, no authentication, no Redis. Past the bounds (places at once, per address, answers
 * per second), or while the node is overloaded, a refused socket is closed at once: throttled
 * first, dropped last. One instance per budget; `label` names what is counted.
 */
export class RefusalAnswers<Label extends string = string> {
  private answering = 0;
  private readonly perAddress = new Map<string, number>();
  private answeredInWindow = 0;
  private windowStart = 0;

  constructor(
    private readonly settings: RefusalAnswerSettings,
    private readonly parts: {
      /** Whether the node sheds load now: then nothing is answered. */
      overloaded(): boolean;
      counted(outcome: RefusalOutcome, label: Label): void;
    },
    private readonly now: () => number = Date.now,
  ) {}

  /** Sockets being answered now. */
  get open(): number {
    return this.answering;
  }

  /**
   * Takes a place for the refused raw `socket` from `ip`, and returns the reply to give its
   * MQTT stream to; or destroys the socket at once and returns undefined.
   */
  begin(socket: Socket, ip: string, refusal: Refusal, label: Label): RefusalReply | undefined {
    const { maxAnswering, maxAnsweringPerAddress } = this.settings;
    const fromIp = this.perAddress.get(ip) ?? 0;
    if (
      this.answering >= maxAnswering ||
      fromIp >= maxAnsweringPerAddress ||
      this.parts.overloaded() ||
      !this.withinRate()
    ) {
      socket.destroy();
      this.parts.counted("dropped", label);
      return undefined;
    }
    this.answering++;
    this.perAddress.set(ip, fromIp + 1);
    return new PendingAnswer(socket, refusal, this.settings, (answered) => {
      this.release(ip);
      this.parts.counted(answered ? "answered" : "unread", label);
    });
  }

  /** Takes one answer of this second's budget, if any is left. */
  private withinRate(): boolean {
    const now = this.now();
    if (now - this.windowStart >= 1_000) {
      this.windowStart = now;
      this.answeredInWindow = 0;
    }
    if (this.answeredInWindow >= this.settings.maxAnswersPerSecond) return false;
    this.answeredInWindow++;
    return true;
  }

  private release(ip: string): void {
    this.answering--;
    const fromIp = (this.perAddress.get(ip) ?? 1) - 1;
    if (fromIp <= 0) this.perAddress.delete(ip);
    else this.perAddress.set(ip, fromIp);
  }
}

/** One refused socket between its refusal and its close. */
class PendingAnswer implements RefusalReply {
  private stream: Duplex | undefined;
  private answered = false;

  constructor(
    private readonly socket: Socket,
    private readonly refusal: Refusal,
    private readonly settings: RefusalAnswerSettings,
    done: (answered: boolean) => void,
  ) {
    socket.on("error", noop);
    const timer = setTimeout(() => this.destroy(), settings.deadlineMs);
    socket.once("close", () => {
      clearTimeout(timer);
      // A stream over the socket (TLS, WebSocket) closes with it; its own 'close' may come later.
      this.stream?.destroy();
      done(this.answered);
    });
  }

  answer(stream: Duplex): void {
    if (this.stream !== undefined) return;
    this.stream = stream;
    if (this.socket.destroyed) {
      stream.destroy();
      return;
    }
    if (stream !== this.socket) stream.on("error", noop);
    const { maxConnectBytes } = this.settings;
    let buffered: Buffer = EMPTY;
    stream.on("readable", () => {
      for (let chunk = stream.read() as Buffer | null; chunk !== null; chunk = stream.read()) {
        // After the answer, what the client still sends is read and dropped: unread bytes at
        // the close would make it a reset, which can overtake the CONNACK.
        if (this.answered) continue;
        buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
        const read = readConnectHead(buffered, maxConnectBytes);
        if (read.status === "incomplete") continue;
        const connack =
          read.status === "complete" ? refusalConnack(read.head, this.refusal.code) : undefined;
        if (connack === undefined) {
          this.destroy();
          return;
        }
        this.answered = true;
        buffered = EMPTY;
        // Ended, not destroyed: the client reads the CONNACK and closes [MQTT-3.2.2-7]. Over
        // WebSocket the end is a close frame after the CONNACK's binary frame.
        stream.end(connack);
      }
    });
  }

  private destroy(): void {
    this.stream?.destroy();
    this.socket.destroy();
  }
}

const EMPTY = Buffer.alloc(0);

function noop(): void {}
