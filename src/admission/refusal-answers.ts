import type { Socket } from "node:net";
import { ReasonCode } from "../errors.js";
import { readConnectHead, refusalConnack } from "../protocol/refusal-connack.js";
import type { SocketRejection } from "./connection-quotas.js";

/**
 * What became of a refused socket that could have been answered: `answered` (its CONNECT got
 * the refusal's CONNACK), `dropped` (closed at once: a bound was reached or the node is
 * overloaded), `unread` (no CONNECT within the byte cap and the deadline, or a malformed one).
 */
export type RefusalOutcome = "answered" | "dropped" | "unread";

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
 * The bounds. Places: 64 hold at most 64 sockets, timers and 512-byte buffers, and a flood of
 * silent sockets that fills them leaves later refusals dropped at once, the cost of a refusal
 * without an answer. Two per address: a device retries one connection at a time, and a site
 * behind one NAT rarely has more refused at the same moment. Rate: at a steady pace an answer
 * cost the node 100-200 us of CPU more than a drop (bench/refusal-cost.ts, 2 cores, loopback:
 * reading the CONNECT, writing, and the client's close are wake-ups a drop never has), so 200
 * answers a second cost at most 2-4 % of a core more than dropping, however fast the flood
 * comes; refused devices retry after seconds, so that still answers several hundred of them per
 * node each second.
 */
export const REFUSAL_ANSWER_BOUNDS = {
  maxAnswering: 64,
  maxAnsweringPerAddress: 2,
  maxAnswersPerSecond: 200,
  maxConnectBytes: 512,
  /** Capped by `limits.connectTimeoutMs`: a client sends its CONNECT one round trip after connecting. */
  deadlineMs: 2_000,
} as const;

/** The MQTT 5 CONNACK reason code of each socket quota (3.1.1 clients get return code 3). */
const REJECTION_CODE: Record<SocketRejection, ReasonCode> = {
  rate: ReasonCode.ConnectionRateExceeded,
  per_ip: ReasonCode.QuotaExceeded,
  per_node: ReasonCode.QuotaExceeded,
  cluster: ReasonCode.QuotaExceeded,
};

/**
 * Tells a client refused by a socket quota why, when that is affordable: its CONNECT is read,
 * byte-capped and within a deadline, and answered with a CONNACK (0x97 quota exceeded or 0x9F
 * connection rate exceeded for MQTT 5, return code 3 for 3.1.1), then the socket is closed.
 * Nothing else happens for such a socket: no engine, no authentication, no Redis. Only plain
 * MQTT sockets are answered (over TLS or WebSocket an answer would cost a handshake). Past the
 * bounds (places at once, per address, answers per second), or while the node is overloaded,
 * a refused socket is closed at once: throttled first, dropped last.
 */
export class RefusalAnswers {
  private answering = 0;
  private readonly perAddress = new Map<string, number>();
  private answeredInWindow = 0;
  private windowStart = 0;

  constructor(
    private readonly settings: RefusalAnswerSettings,
    private readonly parts: {
      /** Whether the node sheds load now: then nothing is answered. */
      overloaded(): boolean;
      counted(outcome: RefusalOutcome): void;
    },
    private readonly now: () => number = Date.now,
  ) {}

  /** Sockets being answered now. */
  get open(): number {
    return this.answering;
  }

  /** Answers the refused `socket` from `ip`, or destroys it at once. */
  answer(socket: Socket, ip: string, rejection: SocketRejection): void {
    const { maxAnswering, maxAnsweringPerAddress } = this.settings;
    const fromIp = this.perAddress.get(ip) ?? 0;
    if (
      this.answering >= maxAnswering ||
      fromIp >= maxAnsweringPerAddress ||
      this.parts.overloaded() ||
      !this.withinRate()
    ) {
      socket.destroy();
      this.parts.counted("dropped");
      return;
    }
    this.answering++;
    this.perAddress.set(ip, fromIp + 1);
    this.read(socket, REJECTION_CODE[rejection], () => this.release(ip));
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

  private read(socket: Socket, code: ReasonCode, done: () => void): void {
    const { maxConnectBytes, deadlineMs } = this.settings;
    let buffered: Buffer = EMPTY;
    let answered = false;
    socket.on("error", noop);
    const timer = setTimeout(() => socket.destroy(), deadlineMs);
    socket.on("readable", () => {
      for (let chunk = socket.read() as Buffer | null; chunk !== null; chunk = socket.read()) {
        // After the answer, what the client still sends is read and dropped: unread bytes at
        // the close would make it a reset, which can overtake the CONNACK.
        if (answered) continue;
        buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
        const read = readConnectHead(buffered, maxConnectBytes);
        if (read.status === "incomplete") continue;
        const connack = read.status === "complete" ? refusalConnack(read.head, code) : undefined;
        if (connack === undefined) {
          socket.destroy();
          return;
        }
        answered = true;
        buffered = EMPTY;
        // Ended, not destroyed: the client reads the CONNACK and closes [MQTT-3.2.2-7].
        socket.end(connack);
      }
    });
    socket.once("close", () => {
      clearTimeout(timer);
      done();
      this.parts.counted(answered ? "answered" : "unread");
    });
  }
}

const EMPTY = Buffer.alloc(0);

function noop(): void {}
