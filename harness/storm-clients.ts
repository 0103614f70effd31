import assert from "node:assert/strict";
import type { Socket } from "node:net";
import type { RunningNode } from "./in-process-node.js";
import { connectPacket, mqttString, packet, rawConnect, readBytes } from "./raw-socket.js";

/**
 * Raw-socket clients that each subscribe to many filters at once and leave together, as a
 * plant's PLCs do on a reconnect and a network cut, and the node's subscription gauge they move.
 */

/** SUBACK of one filter: type, length, packet id, return code. */
export const SUBACK_BYTES = 5;
const DISCONNECT = Buffer.from([0xe0, 0x00]);
/** Clients connecting at once while a storm is built. */
const CONNECTING = 50;

/** `filters` SUBSCRIBEs of one QoS 1 filter each (storm/<client>/cmd/<i>), back to back. */
export function subscribePackets(clientId: string, filters: number): Buffer {
  const packets: Buffer[] = [];
  for (let i = 0; i < filters; i++) {
    const id = Buffer.alloc(2);
    id.writeUInt16BE((i % 65_535) + 1);
    const body = Buffer.concat([id, mqttString(`storm/${clientId}/cmd/${i}`), Buffer.from([1])]);
    packets.push(packet(0x82, body));
  }
  return Buffer.concat(packets);
}

export interface Subscribed {
  socket: Socket;
  /** 'data' events the SUBACKs came in. */
  reads: number;
}

/** Connects a client, sends its SUBSCRIBEs in one write and waits for every SUBACK (granted). */
export async function subscribeAll(
  port: number,
  clientId: string,
  filters: number,
): Promise<Subscribed> {
  const socket = await rawConnect(port);
  socket.write(connectPacket(clientId, { keepalive: 0 }));
  const connack = await readBytes(socket, 4);
  assert.equal(connack[3], 0, "CONNACK accepted");
  let reads = 0;
  const count = (): void => {
    reads++;
  };
  socket.on("data", count);
  const expected = filters * SUBACK_BYTES;
  const subacks = readBytes(socket, expected);
  socket.write(subscribePackets(clientId, filters));
  const bytes = await subacks;
  socket.off("data", count);
  for (let offset = 0; offset < expected; offset += SUBACK_BYTES) {
    assert.equal(bytes[offset], 0x90, "a SUBACK");
    assert.equal(bytes[offset + 4], 1, "granted QoS 1");
  }
  return { socket, reads };
}

/** `clients` clients (ids `<runId>-<n>`) of `filters` filters each, opened CONNECTING at a time. */
export async function storm(
  port: number,
  runId: string,
  clients: number,
  filters: number,
): Promise<Socket[]> {
  const sockets: Socket[] = [];
  for (let first = 0; first < clients; first += CONNECTING) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(CONNECTING, clients - first) }, (_, i) =>
        subscribeAll(port, `${runId}-${first + i}`, filters),
      ),
    );
    sockets.push(...batch.map((b) => b.socket));
  }
  return sockets;
}

/** Every client sends DISCONNECT at once; resolves when the node has closed every socket. */
export async function leave(sockets: Socket[]): Promise<void> {
  await Promise.all(
    sockets.map(
      (socket) =>
        new Promise<void>((resolve) => {
          socket.once("close", () => resolve());
          socket.end(DISCONNECT);
        }),
    ),
  );
}

/** The node's sluice_subscriptions gauge, from its /metrics. */
export async function subscriptionGauge(node: RunningNode): Promise<number> {
  const text = await (await fetch(`${node.httpUrl}/metrics`)).text();
  const match = /^sluice_subscriptions(?:\{[^}]*\})? (\S+)$/m.exec(text);
  return Number(match?.[1]);
}

/** Reads the gauge until it shows `expected` (resolves) or `deadlineMs` passes (fails). */
export async function gaugeReaches(
  node: RunningNode,
  expected: number,
  deadlineMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  let last = await subscriptionGauge(node);
  while (last !== expected) {
    if (Date.now() > deadline)
      assert.fail(`sluice_subscriptions is ${last}, not ${expected}, after ${deadlineMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
    last = await subscriptionGauge(node);
  }
}
