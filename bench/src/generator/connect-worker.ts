/**
 * A generator process for the connection scenarios (forked by connection-pool.ts): opens
 * idle MQTT connections over raw sockets, a bounded number at a time, and, when asked,
 * reconnects every connection the broker drops to a fallback address, as a client library
 * would after its node died.
 */
import { connect, type Socket } from "node:net";
import { connectPacket, whenConnack } from "./connect-packets.js";

export interface OpenCommand {
  type: "open";
  url: string;
  clientIdPrefix: string;
  count: number;
  /** Connections awaiting their CONNACK at once: more would overflow the listen backlog. */
  window: number;
}

export interface FailoverCommand {
  type: "reconnect-to";
  /** Where every dropped connection reconnects, with the same client id. */
  url: string;
  /** Pause after a refused or failed attempt (a client library's reconnect period). */
  retryMs: number;
}

export type ConnectWorkerCommand = OpenCommand | FailoverCommand | { type: "close" };

export interface AttemptCounts {
  accepted: number;
  /** CONNACK 3: the broker's overload guard (or its limits) turned the client away. */
  refusedServerUnavailable: number;
  refusedOther: number;
  /** Socket errors and closes before a CONNACK. */
  failed: number;
}

export type ConnectWorkerReport =
  | ({ type: "opened"; startedAt: number; finishedAt: number; open: number } & AttemptCounts)
  | ({ type: "restored"; dropped: number; restoredAt: number } & AttemptCounts)
  | { type: "progress"; dropped: number; reconnected: number };

const counts = (): AttemptCounts => ({
  accepted: 0,
  refusedServerUnavailable: 0,
  refusedOther: 0,
  failed: 0,
});

function send(report: ConnectWorkerReport): void {
  process.send?.(report);
}

function parse(url: string): { host: string; port: number } {
  const parsed = new URL(url);
  return { host: parsed.hostname, port: Number(parsed.port) };
}

const open = new Map<string, Socket>();
let failover: FailoverCommand | undefined;
let dropped = 0;
let reconnected = 0;
let failoverCounts = counts();
let closing = false;

/** One CONNECT/CONNACK exchange; resolves with the outcome and leaves an accepted socket open. */
function attempt(url: string, clientId: string, tally: AttemptCounts): Promise<boolean> {
  const { host, port } = parse(url);
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    let settled = false;
    const settle = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      resolve(ok);
    };
    socket.setNoDelay(true);
    socket.once("connect", () => socket.write(connectPacket(clientId)));
    whenConnack(socket, (code) => {
      if (settled) return;
      if (code === 0) {
        tally.accepted++;
        open.set(clientId, socket);
        socket.once("close", () => onDropped(clientId, socket));
        settle(true);
        return;
      }
      if (code === 3) tally.refusedServerUnavailable++;
      else tally.refusedOther++;
      socket.destroy();
      settle(false);
    });
    socket.on("error", () => {
      // counted on close
    });
    socket.once("close", () => {
      if (settled) return;
      tally.failed++;
      settle(false);
    });
  });
}

async function openAll(command: OpenCommand): Promise<void> {
  const tally = counts();
  const startedAt = Date.now();
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < command.count) {
      const clientId = `${command.clientIdPrefix}${next++}`;
      await attempt(command.url, clientId, tally);
    }
  };
  await Promise.all(Array.from({ length: Math.min(command.window, command.count) }, lane));
  send({ type: "opened", startedAt, finishedAt: Date.now(), open: open.size, ...tally });
}

/** A connection the broker closed: with a failover address, reconnect until accepted. */
function onDropped(clientId: string, socket: Socket): void {
  if (open.get(clientId) === socket) open.delete(clientId);
  if (closing || !failover) return;
  dropped++;
  void reconnect(clientId, failover);
}

async function reconnect(clientId: string, target: FailoverCommand): Promise<void> {
  while (!closing) {
    if (await attempt(target.url, clientId, failoverCounts)) break;
    // A little jitter, as real clients have, so that retries do not arrive in lockstep.
    await new Promise((r) => setTimeout(r, target.retryMs * (0.5 + Math.random())));
  }
  reconnected++;
  if (reconnected === dropped)
    send({ type: "restored", dropped, restoredAt: Date.now(), ...failoverCounts });
}

process.on("message", (command: ConnectWorkerCommand) => {
  if (command.type === "open") void openAll(command);
  else if (command.type === "reconnect-to") {
    failover = command;
    failoverCounts = counts();
  } else {
    closing = true;
    for (const socket of open.values()) socket.destroy();
    open.clear();
    process.disconnect?.();
  }
});

// Progress for the parent (how far a storm's reconnection is), and the parent's death ends us.
setInterval(() => {
  if (failover && dropped > 0) send({ type: "progress", dropped, reconnected });
}, 1_000).unref();
process.on("disconnect", () => process.exit(0));
