import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { describe, it } from "node:test";

const LOGGER = new URL("../../src/observability/logger.js", import.meta.url).href;
const AUDIT = new URL("../../src/security/audit-log.js", import.meta.url).href;

/** A node process that logs with the node's logger (`script` gets `log`), its stdout lines. */
function logFrom(
  script: string,
  env: Readonly<Record<string, string>> = {},
): {
  lines: Array<Record<string, unknown>>;
  next(match: (line: Record<string, unknown>) => boolean, ms: number): Promise<void>;
  exited: Promise<number | null>;
  kill(): void;
} {
  const source = `Promise.all([import(${JSON.stringify(LOGGER)}), import(${JSON.stringify(AUDIT)})]).then(([{ createLogger }, { AuditLog }]) => {
    const log = createLogger({ level: "info", format: "json", nodeId: "t" });
    const audit = new AuditLog(log);
    ${script}
  });`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", source], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, ...env },
  });
  const lines: Array<Record<string, unknown>> = [];
  const waiters: Array<() => void> = [];
  let rest = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    const parts = (rest + chunk).split("\n");
    rest = parts.pop() ?? "";
    for (const part of parts) if (part) lines.push(JSON.parse(part) as Record<string, unknown>);
    for (const waiter of waiters.splice(0)) waiter();
  });
  const exited = new Promise<number | null>((resolve) => child.once("close", resolve));
  return {
    lines,
    exited,
    kill: () => child.kill("SIGKILL"),
    next: (match, ms) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no such line within ${ms} ms`)), ms);
        const check = (): void => {
          if (lines.some(match)) {
            clearTimeout(timer);
            resolve();
          } else waiters.push(check);
        };
        check();
      }),
  };
}

describe("log destination", () => {
  it("a line reaches stdout on its own, without an exit or more lines after it", async () => {
    const node = logFrom(`log.info({ event: "t.first" }, "first"); setInterval(() => {}, 1000);`);
    try {
      await node.next((l) => l.event === "t.first", 5_000);
      assert.equal(node.lines.filter((l) => l.event === "t.first").length, 1);
    } finally {
      node.kill();
    }
  });

  it("a line flushed while an earlier write is still in flight follows it without more lines", async () => {
    // The one thread-pool thread is busy hashing, so the first line's write waits behind it;
    // the second line's batch is due meanwhile, and must go out once that write is done.
    const node = logFrom(
      `import("node:crypto").then(({ pbkdf2 }) => {
        pbkdf2("x", "y", 1_000_000, 32, "sha256", () => {});
        log.info({ event: "t.first" }, "first");
        setTimeout(() => log.info({ event: "t.second" }, "second"), 40);
        setInterval(() => {}, 1000);
      });`,
      { UV_THREADPOOL_SIZE: "1" },
    );
    try {
      await node.next((l) => l.event === "t.second", 10_000);
      assert.deepEqual(
        node.lines.map((l) => l.event),
        ["t.first", "t.second"],
      );
    } finally {
      node.kill();
    }
  });

  it("a process that ends by itself writes its last line first", async () => {
    const node = logFrom(`log.info({ event: "t.last" }, "last");`);
    assert.equal(await node.exited, 0);
    assert.deepEqual(
      node.lines.map((l) => l.event),
      ["t.last"],
    );
  });

  it("lines logged just before process.exit are all written", async () => {
    const node = logFrom(
      `for (let i = 0; i < 500; i++) log.info({ event: "t.burst", i }, "burst"); process.exit(3);`,
    );
    assert.equal(await node.exited, 3);
    const seen = node.lines.filter((l) => l.event === "t.burst").map((l) => l.i);
    assert.deepEqual(
      seen,
      Array.from({ length: 500 }, (_, i) => i),
    );
  });
});

describe("log redaction", () => {
  it("credentials are redacted at the top of a line and one level down; audit lines at the top", async () => {
    const node = logFrom(`
      log.info({ event: "t.top", password: "p1", token: "t1", authorization: "a1", passphrase: "s1" }, "top");
      log.info({ event: "t.nested", redis: { password: "p2", token: "t2", passphrase: "s2", host: "h" } }, "nested");
      audit.authSucceeded({ clientId: "c", password: "p3", token: "t3" }, "password");
      process.exit(0);`);
    assert.equal(await node.exited, 0);
    const line = (event: string) => node.lines.find((l) => l.event === event);
    assert.deepEqual(
      [
        line("t.top")?.password,
        line("t.top")?.token,
        line("t.top")?.authorization,
        line("t.top")?.passphrase,
      ],
      ["[redacted]", "[redacted]", "[redacted]", "[redacted]"],
    );
    assert.deepEqual(line("t.nested")?.redis, {
      password: "[redacted]",
      token: "[redacted]",
      passphrase: "[redacted]",
      host: "h",
    });
    const audited = line("audit.auth_succeeded");
    assert.equal(audited?.clientId, "c");
    assert.equal(audited?.password, "[redacted]");
    assert.equal(audited?.token, "[redacted]");
  });
});
