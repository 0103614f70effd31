import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { IAuthPacket, IConnackPacket } from "mqtt-packet";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { rawConnect } from "../../harness/raw-socket.js";
import { ScrampClient } from "../../harness/scramp-client.js";
import { WireClient } from "../../harness/wire-client.js";
import { hashPasswordScram } from "../../src/security/password-hash.js";

/**
 * Sluice's SCRAM-SHA-256 against an independent client, PyPI's scramp (which SASLpreps names
 * and passwords as RFC 5802 asks), over a real MQTT 5 connection: verifiers Sluice wrote,
 * exchanges Sluice answered, server signatures scramp checked.
 */
const METHOD = "SCRAM-SHA-256";

/** One CONNECT authenticated by scramp; the CONNACK, and whether scramp verified the server. */
async function scrampConnect(
  port: number,
  username: string,
  password: string,
): Promise<{ connack: IConnackPacket; serverVerified: boolean }> {
  const scramp = ScrampClient.start(username, password);
  const wire = new WireClient(await rawConnect(port), 5);
  try {
    wire.send({
      cmd: "connect",
      protocolVersion: 5,
      clientId: `interop-${username.length}`,
      keepalive: 60,
      clean: true,
      properties: { authenticationMethod: METHOD, authenticationData: await scramp.clientFirst() },
    });
    const challenge = (await wire.waitFor("AUTH or CONNACK", (p) =>
      ["auth", "connack"].includes(p.cmd),
    )) as IAuthPacket | IConnackPacket;
    assert.equal(challenge.cmd, "auth", "a server-first message, not a refusal");
    wire.send({
      cmd: "auth",
      reasonCode: 0x18,
      properties: {
        authenticationMethod: METHOD,
        authenticationData: await scramp.final(challenge.properties?.authenticationData as Buffer),
      },
    });
    const connack = (await wire.waitFor("CONNACK", (p) => p.cmd === "connack")) as IConnackPacket;
    const serverVerified =
      connack.reasonCode === 0 && (await scramp.verified(connack.properties?.authenticationData));
    return { connack, serverVerified };
  } finally {
    scramp.stop();
    wire.stream.destroy();
  }
}

describe("SCRAM-SHA-256 interoperability with scramp (PyPI)", () => {
  let dir: string;
  let node: RunningNode;
  let port: number;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sluice-scramp-"));
    const lines = [
      `plc-1:${await hashPasswordScram("pencil")}`,
      // Stored as SASLprep makes it: "IXpencil" (U+2168 ROMAN NUMERAL NINE, NFKC).
      `plc-2:${await hashPasswordScram("\u2168pencil")}`,
      `plc-3:${await hashPasswordScram("p\u00e4ssw\u00f6rd \u00a0x")}`,
    ];
    await writeFile(join(dir, "passwd"), `${lines.join("\n")}\n`);
    node = await startNode({ auth: { allowAnonymous: false, passwordFile: "passwd" } }, dir);
    port = Number(new URL(node.urls.tcp as string).port);
  });
  after(async () => {
    await node?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("scramp authenticates with a verifier `sluice passwd --scram` wrote, and verifies Sluice", async () => {
    const { connack, serverVerified } = await scrampConnect(port, "plc-1", "pencil");
    assert.equal(connack.reasonCode, 0);
    assert.equal(serverVerified, true);
  });

  it("non-ASCII passwords: what scramp SASLpreps matches what Sluice stored", async () => {
    // The soft hyphen is mapped to nothing: "I\u00ADXpencil" is "IXpencil" too.
    for (const [user, password] of [
      ["plc-2", "I\u00ADXpencil"],
      ["plc-2", "\u2168pencil"],
      ["plc-3", "p\u00e4ssw\u00f6rd \u2003x"], // U+2003 EM SPACE is mapped to a space
    ] as const) {
      const { connack, serverVerified } = await scrampConnect(port, user, password);
      assert.equal(connack.reasonCode, 0, JSON.stringify(password));
      assert.equal(serverVerified, true, JSON.stringify(password));
    }
  });

  it("a wrong password is refused with 0x86", async () => {
    const { connack, serverVerified } = await scrampConnect(port, "plc-2", "IXpencil!");
    assert.equal(connack.reasonCode, 0x86);
    assert.equal(serverVerified, false);
  });
});
