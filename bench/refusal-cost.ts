/**
 * What answering a socket-quota refusal costs the node against dropping it: a `sluice start`
 * process whose one place (`limits.connections.perNode: 1`) is taken, so that every further
 * connection is refused, flooded by clients that each connect, send an MQTT 5 CONNECT at once and
 * wait for the close: paced under the node's answer budget (every refusal answered, the cost of
 * an answer), then as fast as the node takes them from 32 addresses (the budget at work) and
 * from one (2 answered at once per address). The node's CPU comes from /proc (user + system),
 * per refused connection.
 * Then a flood of silent sockets (never a CONNECT), from many addresses: the most sockets the
 * node held open at once, and whether /readyz stayed 200.
 *
 *   npm run build && node dist/bench/refusal-cost.js [connects] [rounds] [baseline-cli]
 *
 * With REFUSAL_TRANSPORT=tls the node listens on `tls` (a throwaway ECDSA P-256 PKI) and every
 * refused client handshakes first, paced under the handshake answers' budget of 20 a second;
 * with REFUSAL_TRANSPORT=ws the same over a `ws` listener (HTTP upgrade, then WebSocket
 * frames). Silent sockets never start a handshake or a request.
 *
 * With a baseline CLI (another build's dist/src/cli.js, e.g. one that drops every refusal) the
 * two builds run interleaved, round by round, in the same sitting.
 */
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect as netConnect, type Socket } from "node:net";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { connect as tlsConnect } from "node:tls";
import { createWebSocketStream, WebSocket } from "ws";
import { createTestPki, type TestPki } from "../harness/certs.js";
import { CLI, SluiceProcess } from "../harness/sluice-process.js";

const CONNECTS = Number(process.argv[2] ?? 20_000);
const ROUNDS = Number(process.argv[3] ?? 3);
const BASELINE = process.argv[4];
/** Refused connections in flight at once. */
const WINDOW = 32;
/** Silent sockets: 50 addresses x 20. */
const SILENT_ADDRESSES = 50;
const SILENT_PER_ADDRESS = 20;
const TICKS_PER_SECOND = 100;
const TRANSPORT =
  process.env.REFUSAL_TRANSPORT === "tls"
    ? "tls"
    : process.env.REFUSAL_TRANSPORT === "ws"
      ? "ws"
      : "tcp";
const TLS = TRANSPORT === "tls";
/** Under the node's 200 (TLS, WebSocket: 20) answers a second: every paced refusal is answered. */
const PACED_PER_SECOND = TRANSPORT === "tcp" ? 180 : 18;
/** Ten seconds of the paced flood. */
const PACED_CONNECTS = PACED_PER_SECOND * 10;
/** The CA the TLS clients trust. */
let pki: TestPki | undefined;

/** An MQTT 5 CONNECT with a clean start, a client id and keep-alive 60 (about 20 bytes). */
function connect5(clientId: string): Buffer {
  const id = Buffer.from(clientId, "utf8");
  const variable = Buffer.from([0, 4, 0x4d, 0x51, 0x54, 0x54, 5, 0x02, 0, 60, 0]);
  const length = variable.length + 2 + id.length;
  return Buffer.concat([Buffer.from([0x10, length]), variable, Buffer.from([0, id.length]), id]);
}

/** User and system CPU ticks of a process. */
function cpuTicks(pid: number): { user: number; system: number } {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  // utime and stime: fields 14 and 15 of stat, 12 and 13 after "pid (comm) "
  return { user: Number(fields[11]), system: Number(fields[12]) };
}

function openSockets(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

function dial(port: number, localAddress?: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: "127.0.0.1", port, localAddress });
    socket.once("connect", () => resolve(socket));
    socket.once("error", reject);
  });
}

/** A TLS connection to the node, once its handshake is done. */
function dialTls(port: number, localAddress?: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      ...(localAddress === undefined ? {} : { localAddress }),
      ...(pki === undefined ? {} : { ca: pki.read(pki.caCert) }),
    });
    socket.once("secureConnect", () => resolve(socket));
    socket.once("error", reject);
  });
}

/** A WebSocket to the node's `ws` listener as a byte stream, once the upgrade is done. */
function dialWs(port: number, localAddress?: string): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/mqtt`, "mqtt", {
      ...(localAddress === undefined ? {} : { localAddress }),
    });
    ws.once("open", () => resolve(createWebSocketStream(ws)));
    ws.once("error", reject);
  });
}

/** The MQTT stream of REFUSAL_TRANSPORT. */
function dialMqtt(port: number, localAddress?: string): Promise<Duplex> {
  if (TRANSPORT === "ws") return dialWs(port, localAddress);
  return (TLS ? dialTls : dial)(port, localAddress);
}

/** Connects, sends a CONNECT, resolves on the close with whether a CONNACK came first. */
async function refusedConnect(port: number, from: string, clientId: string): Promise<boolean> {
  const socket = await dialMqtt(port, from).catch(() => undefined);
  if (socket === undefined) return false;
  return new Promise((resolve) => {
    let answered = false;
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => {
      if (chunk[0] === 0x20) answered = true;
    });
    socket.once("close", () => resolve(answered));
    // A WebSocket's stream ends at the close frame and emits 'close' only once destroyed.
    if (TRANSPORT === "ws") socket.once("end", () => socket.destroy());
    socket.write(connect5(clientId));
  });
}

/**
 * `WINDOW` clients in a loop, each from its own address (so each can be answered) or all from
 * one; `perSecond`: attempts started at most at this pace (under the node's answer budget, all
 * are answered), else as fast as the node takes them.
 */
async function flood(
  port: number,
  count: number,
  oneAddress: boolean,
  perSecond?: number,
): Promise<number> {
  let next = 0;
  let answered = 0;
  const started = Date.now();
  const worker = async (w: number): Promise<void> => {
    const from = oneAddress ? "127.0.0.2" : `127.0.1.${w + 1}`;
    while (next < count) {
      const i = next++;
      if (perSecond !== undefined) {
        const due = started + (i * 1000) / perSecond - Date.now();
        if (due > 0) await new Promise((resolve) => setTimeout(resolve, due));
      }
      if (await refusedConnect(port, from, `r${i}`)) answered++;
    }
  };
  await Promise.all(Array.from({ length: WINDOW }, (_, w) => worker(w)));
  return answered;
}

/** Opens the silent sockets; resolves with the most the node held at once and /readyz seen. */
async function silentFlood(
  pid: number,
  port: number,
  httpPort: number,
): Promise<{ peakHeld: number; ready: boolean; closedMs: number }> {
  const before = openSockets(pid);
  const sockets: Socket[] = [];
  for (let a = 0; a < SILENT_ADDRESSES; a++) {
    const from = `127.0.${10 + Math.floor(a / 200)}.${(a % 200) + 1}`;
    const batch = await Promise.all(
      Array.from({ length: SILENT_PER_ADDRESS }, () => dial(port, from).catch(() => undefined)),
    );
    for (const socket of batch) if (socket) sockets.push(socket);
  }
  const closes = sockets.map(
    (socket) =>
      new Promise<void>((resolve) => {
        socket.on("error", () => {});
        if (socket.destroyed) resolve();
        socket.once("close", () => resolve());
      }),
  );
  const peakHeld = openSockets(pid) - before;
  const ready = (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status === 200;
  const started = Date.now();
  await Promise.race([
    Promise.all(closes),
    new Promise((resolve) => setTimeout(resolve, 10_000).unref()),
  ]);
  const closedMs = Date.now() - started;
  for (const socket of sockets) socket.destroy();
  return { peakHeld, ready, closedMs };
}

async function round(cli: string, dir: string) {
  const node = SluiceProcess.spawn(
    ["start", "--config", join(dir, "sluice.yaml")],
    { SLUICE_LOG_LEVEL: "info" },
    [],
    cli,
  );
  try {
    const { ports, httpPort } = await node.ready();
    const port = Number(ports[TRANSPORT]);
    const pid = node.child.pid as number;
    const held = await dialMqtt(port);
    held.write(connect5("holder"));
    await new Promise((resolve) => held.once("data", resolve));
    const measure = async (count: number, oneAddress: boolean, perSecond?: number) => {
      const start = cpuTicks(pid);
      const startedAt = Date.now();
      const answered = await flood(port, count, oneAddress, perSecond);
      const seconds = (Date.now() - startedAt) / 1000;
      const end = cpuTicks(pid);
      const us = (ticks: number) => (ticks / TICKS_PER_SECOND / count) * 1e6;
      return {
        usPerRefusal: us(end.user - start.user + end.system - start.system),
        systemUs: us(end.system - start.system),
        perSecond: count / seconds,
        answered,
      };
    };
    // A pause past the answer budget's one-second window between phases: each starts with the
    // whole budget, not what the phase before left of it.
    const pause = () => new Promise((resolve) => setTimeout(resolve, 1_100));
    const paced = await measure(PACED_CONNECTS, false, PACED_PER_SECOND);
    await pause();
    const spread = await measure(CONNECTS, false);
    await pause();
    const single = await measure(CONNECTS, true);
    await pause();
    const silent = await silentFlood(pid, port, httpPort);
    held.destroy();
    return { paced, spread, single, silent };
  } finally {
    node.kill("SIGTERM");
    await node.exited;
  }
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "sluice-refusal-cost-"));
  if (TLS) pki = await createTestPki();
  const listener = pki
    ? `{ type: tls, host: 127.0.0.1, port: 0, cert: ${pki.serverCert}, key: ${pki.serverKey} }`
    : `{ type: ${TRANSPORT}, host: 127.0.0.1, port: 0 }`;
  await writeFile(
    join(dir, "sluice.yaml"),
    [
      `listeners: [${listener}]`,
      "http: { host: 127.0.0.1, port: 0 }",
      "auth: { allowAnonymous: true }",
      "limits: { connectTimeoutMs: 2000, connections: { perNode: 1 } }",
      "",
    ].join("\n"),
  );
  const builds: Array<[string, string]> = [["this build", CLI]];
  if (BASELINE) builds.push(["baseline", BASELINE]);
  console.log(
    `load before: ${loadavg()
      .map((l) => l.toFixed(1))
      .join(" ")}`,
  );
  try {
    for (let r = 1; r <= ROUNDS; r++) {
      for (const [name, cli] of r % 2 === 0 ? [...builds].reverse() : builds) {
        const result = await round(cli, dir);
        const { paced, spread, single, silent } = result;
        const line = (f: typeof spread) =>
          `${f.usPerRefusal.toFixed(1)} us CPU/refusal (${f.systemUs.toFixed(1)} system), ${Math.round(f.perSecond)}/s, ${f.answered} answered`;
        console.log(
          `round ${r} ${name}: paced ${PACED_PER_SECOND}/s: ${line(paced)}; ` +
            `${WINDOW} addresses: ${line(spread)}; one address: ${line(single)}; ` +
            `silent ${SILENT_ADDRESSES * SILENT_PER_ADDRESS}: ${silent.peakHeld} held at once, ` +
            `readyz ${silent.ready ? 200 : 503}, all closed in ${silent.closedMs} ms`,
        );
      }
    }
  } finally {
    console.log(
      `load after: ${loadavg()
        .map((l) => l.toFixed(1))
        .join(" ")}`,
    );
    await rm(dir, { recursive: true, force: true });
    await pki?.cleanup();
  }
}

await main();
