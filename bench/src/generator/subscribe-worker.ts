/**
 * A generator process of the subscribe-storm scenario (forked by subscriber-swarm.ts): opens
 * raw-socket MQTT clients, a bounded number awaiting CONNACK at a time, and as soon as a
 * client is accepted it sends its SUBSCRIBEs, one filter each, all at once (as a client
 * library does when it re-subscribes after a reconnect). Counts the SUBACKed filters; on
 * "leave" every client sends DISCONNECT and closes.
 */
import { connect, type Socket } from "node:net";
import { connectPacket } from "./connect-packets.js";
import { PacketReader, SUBACK } from "./raw-packets.js";
import { CONNACK, DISCONNECT, subscribePacket } from "./subscribe-packets.js";

export interface StormCommand {
  type: "storm";
  url: string;
  clientIdPrefix: string;
  clients: number;
  /** Filters per client, each in its own SUBSCRIBE. */
  filters: number;
  qos: 0 | 1 | 2;
  /** Connections awaiting their CONNACK at once (under the listen backlog). */
  window: number;
  /** The storm report is sent at this point whatever is still missing. */
  timeoutMs: number;
}

export type SubscribeWorkerCommand = StormCommand | { type: "leave" } | { type: "close" };

export interface StormCounts {
  connected: number;
  /** CONNACK with a non-zero code, or a socket closed before its CONNACK. */
  connectFailed: number;
  /** SUBACK return codes 0-2, and 0x80 (refused), over all filters so far. */
  granted: number;
  refused: number;
}

export type SubscribeWorkerReport =
  | ({ type: "progress" } & StormCounts)
  | ({
      type: "stormed";
      /** Epoch ms of the first SUBSCRIBE written and of the last SUBACK read (0: none). */
      firstSubscribeAt: number;
      lastSubackAt: number;
      /** Clients with every filter answered. */
      complete: number;
      timedOut: boolean;
    } & StormCounts)
  | { type: "left"; at: number };

interface StormClient {
  socket: Socket;
  answered: number;
}

const clients: StormClient[] = [];
const counts: StormCounts = { connected: 0, connectFailed: 0, granted: 0, refused: 0 };
let firstSubscribeAt = 0;
let lastSubackAt = 0;
let complete = 0;
let progressTimer: NodeJS.Timeout | undefined;

function send(report: SubscribeWorkerReport): void {
  process.send?.(report);
}

function subscribeBatch(command: StormCommand, clientId: string): Buffer {
  const packets: Buffer[] = [];
  for (let i = 0; i < command.filters; i++)
    // Distinct per client, as a PLC's own command topics are.
    packets.push(subscribePacket(i + 1, `storm/${clientId}/cmd/${i}`, command.qos));
  return Buffer.concat(packets);
}

/** One client: CONNECT, then its SUBSCRIBEs; resolves when CONNACKed (or failed). */
function open(command: StormCommand, clientId: string, onSettled: () => void): Promise<void> {
  const { hostname, port } = new URL(command.url);
  return new Promise((resolve) => {
    const socket = connect({ host: hostname, port: Number(port) });
    const client: StormClient = { socket, answered: 0 };
    let accepted = false;
    let settled = false;
    const settle = (): void => {
      if (!settled) {
        settled = true;
        resolve();
      }
    };
    socket.setNoDelay(true);
    socket.once("connect", () => socket.write(connectPacket(clientId)));
    const reader = new PacketReader((firstByte, body) => {
      const type = firstByte >> 4;
      if (type === CONNACK && !accepted) {
        if (body[1] !== 0) {
          counts.connectFailed++;
          socket.destroy();
          settle();
          onSettled();
          return;
        }
        accepted = true;
        counts.connected++;
        clients.push(client);
        if (firstSubscribeAt === 0) firstSubscribeAt = Date.now();
        socket.write(subscribeBatch(command, clientId));
        settle();
      } else if (type === SUBACK) {
        for (let i = 2; i < body.length; i++) {
          if ((body[i] ?? 0x80) < 0x80) counts.granted++;
          else counts.refused++;
        }
        lastSubackAt = Date.now();
        if (++client.answered === command.filters) {
          complete++;
          onSettled();
        }
      }
    });
    socket.on("data", (chunk: Buffer) => reader.push(chunk));
    socket.on("error", () => {
      // counted on close
    });
    socket.once("close", () => {
      if (accepted || settled) return;
      counts.connectFailed++;
      settle();
      onSettled();
    });
  });
}

async function storm(command: StormCommand): Promise<void> {
  let next = 0;
  let reported = false;
  let timer: NodeJS.Timeout | undefined;
  const report = (timedOut: boolean): void => {
    if (reported) return;
    reported = true;
    clearTimeout(timer);
    send({ type: "stormed", firstSubscribeAt, lastSubackAt, complete, timedOut, ...counts });
  };
  // Every client answered in full, or refused.
  const settled = (): void => {
    if (complete + counts.connectFailed >= command.clients) report(false);
  };
  timer = setTimeout(() => report(true), command.timeoutMs);
  progressTimer = setInterval(() => send({ type: "progress", ...counts }), 1_000);
  const lane = async (): Promise<void> => {
    while (next < command.clients && !reported)
      await open(command, `${command.clientIdPrefix}${next++}`, settled);
  };
  await Promise.all(Array.from({ length: Math.min(command.window, command.clients) }, lane));
}

function leave(): void {
  clearInterval(progressTimer);
  for (const { socket } of clients) socket.end(DISCONNECT);
  clients.length = 0;
  send({ type: "left", at: Date.now() });
}

process.on("message", (command: SubscribeWorkerCommand) => {
  if (command.type === "storm") void storm(command);
  else if (command.type === "leave") leave();
  else {
    clearInterval(progressTimer);
    for (const { socket } of clients) socket.destroy();
    process.disconnect?.();
  }
});
process.on("disconnect", () => process.exit(0));
