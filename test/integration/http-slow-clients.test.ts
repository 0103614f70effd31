import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { callApi, newAdminToken } from "../../harness/admin-api.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { LogCapture } from "../../harness/log-capture.js";
import { closedByPeer, rawConnect } from "../../harness/raw-socket.js";

/** The headersTimeout of the metrics and the admin servers. */
const HEADERS_TIMEOUT_MS = 10_000;
const admin = newAdminToken();
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-slow-http-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function startAdminNode(
  settings: Record<string, unknown>,
  logger?: LogCapture,
  extra: Record<string, unknown> = {},
): Promise<RunningNode> {
  return startNode(
    {
      ...extra,
      registry: { file: join(dir, `devices-${Math.random().toString(36).slice(2)}.json`) },
      admin: { host: "127.0.0.1", port: 0, tokens: [admin.digest], ...settings },
    },
    dir,
    logger ? { logger: logger.logger } : {},
  );
}

/** Rejects when `promise` has not settled within `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Sends a request's headers one line every 500 ms, never ending them (at most 40 lines, 20 s),
 * and resolves with how long after connecting the server closed the connection.
 */
async function trickleHeaders(port: number): Promise<number> {
  const socket = await rawConnect(port);
  const started = Date.now();
  const closed = closedByPeer(socket);
  socket.write("GET /healthz HTTP/1.1\r\nHost: sluice\r\n");
  let lines = 0;
  const trickle = setInterval(() => {
    if (++lines > 40) socket.destroy();
    else socket.write(`X-Slow-${lines}: 1\r\n`);
  }, 500);
  try {
    await closed;
    return Date.now() - started;
  } finally {
    clearInterval(trickle);
    socket.destroy();
  }
}

/** Sends one request on an open socket; resolves with the status line of the answer. */
function statusLine(socket: Socket, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    const onData = (chunk: Buffer): void => {
      text += chunk.toString("latin1");
      const end = text.indexOf("\r\n");
      if (end < 0) return;
      socket.off("data", onData);
      resolve(text.slice(0, end));
    };
    socket.on("data", onData);
    socket.once("close", () => reject(new Error("closed before an answer")));
    socket.write(request);
  });
}

describe("HTTP servers and slow or greedy clients", () => {
  it("a client trickling its headers is closed within headersTimeout + 1 s, on the metrics, admin and WebSocket ports", async () => {
    const node = await startAdminNode({}, undefined, {
      listeners: [{ type: "ws", host: "127.0.0.1", port: 0, path: "/mqtt" }],
    });
    try {
      const ports = {
        metrics: node.node.addresses.http.port,
        admin: node.node.addresses.admin?.port as number,
        ws: Number(new URL(node.urls.ws as string).port),
      };
      const closedAfterMs = await Promise.all(
        Object.entries(ports).map(
          async ([name, port]) => [name, await trickleHeaders(port)] as const,
        ),
      );
      for (const [name, ms] of closedAfterMs) {
        assert.ok(
          ms >= HEADERS_TIMEOUT_MS - 500,
          `${name}: closed after ${ms} ms, before its timeout`,
        );
        assert.ok(ms <= HEADERS_TIMEOUT_MS + 1_000, `${name}: closed after ${ms} ms`);
      }
    } finally {
      await node.stop();
    }
  });

  it("an enrollment body the client aborts, or sends malformed, is answered 4xx and logged without an error line", async () => {
    const logs = new LogCapture("debug");
    const node = await startAdminNode({}, logs);
    const port = node.node.addresses.admin?.port as number;
    const head = (length: number) =>
      "POST /api/v1/enroll HTTP/1.1\r\nHost: sluice\r\nContent-Type: application/json\r\n" +
      `Content-Length: ${length}\r\n\r\n`;
    const audited = () =>
      logs.lines.filter((l) => l.event === "audit.admin_request" && l.route === "/api/v1/enroll");
    try {
      const aborted = await rawConnect(port);
      // The server answers 100 Continue when it hands the request to the admin API.
      const continued = await within(
        statusLine(
          aborted,
          `${head(1000).replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n")}`,
        ),
        5_000,
        "100 Continue",
      );
      assert.match(continued, / 100 /);
      const first = logs.waitFor((l) => l.event === "audit.admin_request");
      aborted.write('{"id":');
      aborted.destroy();
      const line = await within(first, 5_000, "the audit line of the aborted request");
      assert.equal(line.status, 400);
      assert.equal(line.level, 30, "an aborted body is the client's business: info");

      const malformed = await rawConnect(port);
      const answer = await within(
        statusLine(malformed, `${head(6)}{"id":`),
        5_000,
        "the answer to a malformed body",
      );
      malformed.destroy();
      assert.match(answer, /^HTTP\/1\.1 400 /);
      await within(
        logs.waitFor(() => audited().length >= 2),
        5_000,
        "the audit line of the malformed request",
      );

      const errors = logs.lines.filter((l) => (l.level ?? 0) >= 50);
      assert.deepEqual(errors, [], "no error-level line for a client's bad body");
      assert.ok(
        logs.lines.every((l) => l.err === undefined),
        "no stack trace logged for a client's bad body",
      );
    } finally {
      await node.stop();
    }
  });

  /**
   * Opens `perIp` connections to `port`, each answered 200 to `request` (so the server has
   * counted it), then one more, which the server must close; the first ones stay open.
   */
  async function assertCappedPerAddress(port: number, perIp: number, request: string) {
    const sockets: Socket[] = [];
    try {
      for (let i = 0; i < perIp; i++) {
        const socket = await rawConnect(port);
        sockets.push(socket);
        assert.match(await within(statusLine(socket, request), 5_000, `socket ${i}`), / 200 /);
      }
      const extra = await rawConnect(port);
      sockets.push(extra);
      await within(closedByPeer(extra), 5_000, "the connection past the cap closed by the server");
      for (const socket of sockets.slice(0, perIp)) assert.equal(socket.destroyed, false);
    } finally {
      for (const socket of sockets) socket.destroy();
    }
  }

  it("the admin and the probes ports close connections beyond maxConnectionsPerIp from one address", async () => {
    const node = await startAdminNode({ maxConnectionsPerIp: 3 }, undefined, {
      http: { host: "127.0.0.1", port: 0, maxConnectionsPerIp: 2 },
    });
    try {
      await assertCappedPerAddress(
        node.node.addresses.admin?.port as number,
        3,
        `GET /api/v1/sessions HTTP/1.1\r\nHost: sluice\r\nAuthorization: Bearer ${admin.token}\r\n\r\n`,
      );
      await assertCappedPerAddress(
        node.node.addresses.http.port,
        2,
        "GET /healthz HTTP/1.1\r\nHost: sluice\r\n\r\n",
      );
    } finally {
      await node.stop();
    }
  });

  it("requests without a valid admin credential beyond the per-address rate get 429 with Retry-After", async () => {
    const node = await startAdminNode({ unauthenticatedRequestsPerMinute: 3 });
    const api = `http://127.0.0.1:${node.node.addresses.admin?.port}`;
    try {
      for (let i = 0; i < 3; i++) {
        assert.equal((await callApi(api, "GET", "/openapi.json")).status, 200, `request ${i}`);
      }
      const limited = await fetch(`${api}/openapi.json`);
      await limited.arrayBuffer();
      assert.equal(limited.status, 429);
      const retryAfter = Number(limited.headers.get("retry-after"));
      assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After: ${retryAfter}`);
      const enroll = await callApi(api, "POST", "/api/v1/enroll", {
        body: { id: "dev-1", token: "x".repeat(32) },
      });
      assert.equal(enroll.status, 429, "enrollment is rate-limited too");
      const wrongToken = await callApi(api, "GET", "/api/v1/sessions", {
        token: newAdminToken().token,
      });
      assert.equal(wrongToken.status, 429, "a wrong token counts as none");
      const authorized = await callApi(api, "GET", "/api/v1/sessions", { token: admin.token });
      assert.equal(authorized.status, 200, "an authenticated admin is not limited");
      const document = await callApi(api, "GET", "/openapi.json", { token: admin.token });
      assert.equal(document.status, 200);
    } finally {
      await node.stop();
    }
  });
});
