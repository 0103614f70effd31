import assert from "node:assert/strict";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { callApi, newAdminToken } from "../../harness/admin-api.js";
import { createTestPki, type TestPki } from "../../harness/certs.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { LogCapture } from "../../harness/log-capture.js";
import { closedAfter, connect, end, type MqttClient } from "../../harness/mqtt-client.js";
import { adminRoutes } from "../../src/admin/admin-api.js";
import { hashPassword } from "../../src/security/password-hash.js";

const admin = newAdminToken();
let dir: string;
let running: RunningNode;
let api: string;

async function start(): Promise<void> {
  running = await startNode(
    {
      auth: { allowAnonymous: false },
      registry: { file: join(dir, "devices.json") },
      admin: { host: "127.0.0.1", port: 0, tokens: [admin.digest] },
    },
    dir,
  );
  api = `http://127.0.0.1:${running.node.addresses.admin?.port}`;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-registry-"));
  await start();
});
after(async () => {
  await running?.stop();
  await rm(dir, { recursive: true, force: true });
});

const call = (method: string, path: string, body?: unknown) =>
  callApi(api, method, path, { token: admin.token, ...(body === undefined ? {} : { body }) });

async function createDevice(id: string, extra: Record<string, unknown> = {}): Promise<string> {
  const created = await call("POST", "/api/v1/devices", { id, ...extra });
  assert.equal(created.status, 201, created.text);
  assert.equal(created.json.id, id);
  assert.equal(typeof created.json.password, "string");
  return created.json.password as string;
}

function connectDevice(id: string, password: string, clientId = id): Promise<MqttClient> {
  return connect(running.urls.tcp as string, { clientId, username: id, password });
}

async function refused(id: string, password: string, clientId = id): Promise<void> {
  await assert.rejects(connectDevice(id, password, clientId), /Not authorized|Bad username/);
}

describe("device registry on a single node (file-backed)", () => {
  it("a device created through the API connects with client id = username = its id, and only so", async () => {
    const password = await createDevice("pump-01", { groups: ["pumps"] });
    const client = await connectDevice("pump-01", password);
    await end(client);
    await refused("pump-01", password, "someone-else");
    await refused("pump-01", `${password}x`);
    const shown = await call("GET", "/api/v1/devices/pump-01");
    assert.equal(shown.status, 200);
    assert.equal(shown.json.hasPassword, true);
    assert.deepEqual(shown.json.groups, ["pumps"]);
    assert.equal(shown.json.passwordHash, undefined, "the hash never leaves the registry");
    assert.equal(typeof shown.json.lastSeenAt, "string");
  });

  it("rotating a password closes the live connection at once and refuses the old password", async () => {
    const old = await createDevice("pump-02");
    const client = await connectDevice("pump-02", old);
    const started = Date.now();
    const rotated = await call("POST", "/api/v1/devices/pump-02/rotate");
    assert.equal(rotated.status, 200);
    const ms = await closedAfter(client, started);
    assert.ok(ms < 1_000, `closed after ${ms} ms`);
    await end(client);
    await refused("pump-02", old);
    const renewed = await connectDevice("pump-02", rotated.json.password);
    await end(renewed);
  });

  it("disabling closes the connection and refuses reconnects until enabled again", async () => {
    const password = await createDevice("pump-03");
    const client = await connectDevice("pump-03", password);
    const started = Date.now();
    assert.equal((await call("PATCH", "/api/v1/devices/pump-03", { enabled: false })).status, 200);
    assert.ok((await closedAfter(client, started)) < 1_000);
    await end(client);
    await refused("pump-03", password);
    assert.equal((await call("PATCH", "/api/v1/devices/pump-03", { enabled: true })).status, 200);
    await end(await connectDevice("pump-03", password));
  });

  it("deleting closes the connection and forgets the device", async () => {
    const password = await createDevice("pump-04");
    const client = await connectDevice("pump-04", password);
    assert.equal((await call("DELETE", "/api/v1/devices/pump-04")).status, 204);
    await closedAfter(client, Date.now());
    await end(client);
    await refused("pump-04", password);
    assert.equal((await call("GET", "/api/v1/devices/pump-04")).status, 404);
    assert.equal((await call("DELETE", "/api/v1/devices/pump-04")).status, 404);
  });

  it("lists devices in pages and refuses a second device with the same id", async () => {
    for (const id of ["list-a", "list-b", "list-c"]) await createDevice(id);
    assert.equal((await call("POST", "/api/v1/devices", { id: "list-a" })).status, 409);
    const first = await call("GET", "/api/v1/devices?after=list-&limit=2");
    assert.deepEqual(
      first.json.devices.map((d: { id: string }) => d.id),
      ["list-a", "list-b"],
    );
    const second = await call("GET", `/api/v1/devices?after=${first.json.next}&limit=2`);
    assert.equal(second.json.devices[0].id, "list-c");
  });

  it("lists connected sessions and disconnects one", async () => {
    const password = await createDevice("rtu-07");
    const client = await connectDevice("rtu-07", password);
    const listed = await call("GET", "/api/v1/sessions");
    assert.equal(listed.status, 200);
    assert.ok(listed.json.sessions.some((s: { clientId: string }) => s.clientId === "rtu-07"));
    assert.equal((await call("DELETE", "/api/v1/sessions/rtu-07")).status, 204);
    await closedAfter(client, Date.now());
    await end(client);
    assert.equal((await call("DELETE", "/api/v1/sessions/rtu-07")).status, 404);
  });

  it("refuses missing or wrong tokens and bad input with 4xx, changing nothing", async () => {
    const noToken = await callApi(api, "POST", "/api/v1/devices", { body: { id: "intruder" } });
    assert.equal(noToken.status, 401);
    const wrongToken = await callApi(api, "POST", "/api/v1/devices", {
      token: newAdminToken().token,
      body: { id: "intruder" },
    });
    assert.equal(wrongToken.status, 401);
    const cases: Array<[string, Parameters<typeof callApi>[3], number]> = [
      ["bad JSON", { raw: "{not json", headers: { "content-type": "application/json" } }, 400],
      ["unknown field", { body: { id: "intruder", admin: true } }, 400],
      ["bad id", { body: { id: "../etc/passwd" } }, 400],
      ["not JSON", { raw: "id=intruder", headers: { "content-type": "text/plain" } }, 415],
      [
        "not UTF-8",
        {
          raw: '{"id":"intruder"}',
          headers: { "content-type": "application/json; charset=latin1" },
        },
        415,
      ],
      [
        "not UTF-8, quoted and in capitals",
        {
          raw: '{"id":"intruder"}',
          headers: { "content-type": 'Application/JSON; Charset="ISO-8859-1"' },
        },
        415,
      ],
      ["oversize", { body: { id: "intruder", groups: ["x".repeat(70_000)] } }, 413],
    ];
    for (const [name, options, status] of cases) {
      const reply = await callApi(api, "POST", "/api/v1/devices", {
        token: admin.token,
        ...options,
      });
      assert.equal(reply.status, status, `${name}: ${reply.text}`);
      assert.equal(typeof reply.json?.error, "string", name);
    }
    assert.equal((await call("GET", "/api/v1/devices/intruder")).status, 404);
    const utf8 = await callApi(api, "POST", "/api/v1/devices", {
      token: admin.token,
      raw: '{"id":"charset-utf8"}',
      headers: { "content-type": "application/json; Charset=UTF-8" },
    });
    assert.equal(utf8.status, 201, utf8.text);
    assert.equal((await call("GET", "/api/v1/nothing")).status, 404);
    assert.equal((await call("PUT", "/api/v1/devices")).status, 405);
    assert.equal((await call("PATCH", "/api/v1/devices/list-a", {})).status, 400);
  });

  it("serves an OpenAPI document generated from the route table: every route, nothing else", async () => {
    const reply = await callApi(api, "GET", "/openapi.json");
    assert.equal(reply.status, 200);
    assert.equal(reply.json.openapi, "3.1.0");
    const paths = reply.json.paths as Record<string, Record<string, unknown>>;
    // The table the admin server routes by.
    const served = adminRoutes({
      registry: undefined as never,
      ca: undefined,
      sessions: undefined as never,
      enrollmentTokenSeconds: 60,
      deviceCertificateDays: 1,
      passwordUsers: () => undefined,
      audit: undefined as never,
    }).map((route) => `${route.method} ${route.path}`);
    const described = Object.entries(paths).flatMap(([path, item]) =>
      Object.keys(item).map((method) => `${method.toUpperCase()} ${path}`),
    );
    assert.deepEqual([...described].sort(), [...served].sort());
    // And the live router answers each described operation (401 without a credential, or the
    // public route's own answer), never "no such endpoint" or "method not allowed".
    for (const operation of described) {
      const [method, path] = operation.split(" ") as [string, string];
      const probe = await callApi(api, method, path.replace(/\{[^}]+\}/g, "probe-1"));
      assert.ok(![404, 405].includes(probe.status), `${operation}: ${probe.status} ${probe.text}`);
    }
    const createDevice = paths["/api/v1/devices"]?.post as {
      requestBody: { content: { "application/json": { schema: { properties: object } } } };
    };
    assert.ok(
      "replacesPasswordUser" in
        createDevice.requestBody.content["application/json"].schema.properties,
      "request bodies come from the schemas that validate them",
    );
  });

  it("random requests never crash the node or answer 5xx", async () => {
    const paths = [
      "/api/v1/devices",
      "/api/v1/devices/fuzz",
      "/api/v1/devices/fuzz/rotate",
      "/api/v1/sessions/x",
      "/api/v1/enroll",
      "/api/v1/devices/%E0%A4%A",
    ];
    const methods = ["GET", "POST", "PATCH", "DELETE"];
    let seed = 7;
    const random = (n: number): number => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed % n;
    };
    const values: unknown[] = [
      null,
      true,
      0,
      -1,
      1e308,
      "",
      "x".repeat(300),
      [],
      {},
      [1, "a"],
      { id: "fuzz" },
    ];
    for (let i = 0; i < 300; i++) {
      const body: Record<string, unknown> = {};
      for (const key of [
        "id",
        "groups",
        "enabled",
        "limits",
        "password",
        "token",
        "csr",
        "ttlSeconds",
        "__proto__",
        "constructor",
      ].filter(() => random(3) === 0)) {
        body[key] = values[random(values.length)];
      }
      const raw =
        random(4) === 0 ? JSON.stringify(body).slice(0, random(20)) : JSON.stringify(body);
      const method = methods[random(4)] as string;
      const reply = await callApi(api, method, paths[random(paths.length)] as string, {
        token: admin.token,
        // fetch sends no body with GET
        ...(method === "GET" ? {} : { raw }),
        headers: { "content-type": "application/json" },
      });
      assert.ok(reply.status < 500, `request ${i} answered ${reply.status}: ${reply.text}`);
    }
    assert.equal((await callApi(running.httpUrl, "GET", "/healthz")).status, 200);
  });

  it("keeps the registry in a private file across restarts", async () => {
    const password = await createDevice("persisted-1");
    assert.equal((await stat(join(dir, "devices.json"))).mode & 0o777, 0o600);
    await running.stop();
    await start();
    await end(await connectDevice("persisted-1", password));
  });
});

describe("admin API over HTTPS with admin client certificates", () => {
  let pki: TestPki;
  let node: RunningNode;
  before(async () => {
    pki = await createTestPki({ clientCn: "operator-anna" });
    node = await startNode(
      {
        registry: { file: join(pki.dir, "devices.json") },
        admin: {
          host: "127.0.0.1",
          port: 0,
          tls: { cert: pki.serverCert, key: pki.serverKey, ca: pki.caCert },
        },
      },
      pki.dir,
    );
  });
  after(async () => {
    await node?.stop();
    await pki?.cleanup();
  });

  /** A request over HTTPS with (or without) a client certificate. */
  function request(
    method: string,
    path: string,
    client: { cert: string; key: string } | undefined,
    body?: unknown,
  ): Promise<{ status: number; body: string }> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        {
          host: "127.0.0.1",
          port: node.node.addresses.admin?.port,
          path,
          method,
          ca: pki.read(pki.caCert),
          servername: "localhost",
          ...(client === undefined
            ? {}
            : { cert: pki.read(client.cert), key: pki.read(client.key) }),
          headers: payload === undefined ? {} : { "content-type": "application/json" },
        },
        (res) => {
          let text = "";
          res.setEncoding("utf8").on("data", (chunk: string) => {
            text += chunk;
          });
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
        },
      );
      req.on("error", reject);
      req.end(payload);
    });
  }

  it("a verified admin certificate is a credential; no certificate, or a stranger's, is not", async () => {
    const admin = { cert: pki.clientCert, key: pki.clientKey };
    const created = await request("POST", "/api/v1/devices", admin, { id: "via-mtls" });
    assert.equal(created.status, 201, created.body);
    assert.equal((await request("GET", "/api/v1/devices/via-mtls", undefined)).status, 401);
    const stranger = { cert: pki.strangerCert, key: pki.strangerKey };
    assert.equal((await request("GET", "/api/v1/devices/via-mtls", stranger)).status, 401);
    assert.equal((await request("GET", "/api/v1/devices/via-mtls", admin)).status, 200);
  });
});

describe("devices named like users of the password file", () => {
  let node: RunningNode;
  let base: string;
  const logs = new LogCapture("info");
  before(async () => {
    await writeFile(join(dir, "passwd"), `op:${await hashPassword("op-pw")}\n`);
    node = await startNode(
      {
        auth: { allowAnonymous: false, passwordFile: "passwd" },
        registry: { file: join(dir, "clash-devices.json") },
        admin: { host: "127.0.0.1", port: 0, tokens: [admin.digest] },
      },
      dir,
      { logger: logs.logger },
    );
    base = `http://127.0.0.1:${node.node.addresses.admin?.port}`;
  });
  after(async () => {
    await node?.stop();
  });
  const clashes = () => logs.lines.filter((l) => l.event === "audit.password_user_clash");

  it("are refused with 409 naming the clash, and audited, unless the request says the device takes over", async () => {
    const refused = await callApi(base, "POST", "/api/v1/devices", {
      token: admin.token,
      body: { id: "op" },
    });
    assert.equal(refused.status, 409);
    assert.match(refused.json.error, /"op".*password file.*replacesPasswordUser/);
    assert.equal(clashes().length, 1);
    assert.equal(clashes()[0]?.replaced, false);
    assert.equal(clashes()[0]?.device, "op");
    // The password file's user still works.
    await end(await connect(node.urls.tcp as string, { username: "op", password: "op-pw" }));

    const replaced = await callApi(base, "POST", "/api/v1/devices", {
      token: admin.token,
      body: { id: "op", replacesPasswordUser: true },
    });
    assert.equal(replaced.status, 201, replaced.text);
    assert.equal(clashes().length, 2);
    assert.equal(clashes()[1]?.replaced, true);
    assert.equal(clashes()[1]?.admin, `token:${admin.digest.slice(0, 8)}`);
    // The device holds the name now: its password works and the file's no longer does.
    await end(
      await connect(node.urls.tcp as string, {
        clientId: "op",
        username: "op",
        password: replaced.json.password,
      }),
    );
    await assert.rejects(
      connect(node.urls.tcp as string, { clientId: "op", username: "op", password: "op-pw" }),
      /Not authorized|Bad username/,
    );

    const other = await callApi(base, "POST", "/api/v1/devices", {
      token: admin.token,
      body: { id: "not-a-user" },
    });
    assert.equal(other.status, 201);
    assert.equal(clashes().length, 2, "no clash, no clash line");
  });
});
