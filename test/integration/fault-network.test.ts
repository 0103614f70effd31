import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { connect } from "node:net";
import { after, before, describe, it } from "node:test";
import { withDeadline } from "../../harness/deadline.js";
import { DelayRelay } from "../../harness/delay-relay.js";
import { FaultNetwork, HOST } from "../../harness/fault-network.js";
import { RedisServer } from "../../harness/redis-server.js";

/** Whether a TCP connection to the address opens within `ms`. */
function opens(host: string, port: number, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(false);
    }, ms);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

function namespaces(): string[] {
  return execFileSync("ip", ["netns", "list"], { encoding: "utf8" })
    .split("\n")
    .filter((line) => line.startsWith(`sluice-chaos-${process.pid}-`));
}

describe("fault network (the chaos tests' harness)", () => {
  let network: FaultNetwork;
  let redis: RedisServer;

  before(async () => {
    network = await FaultNetwork.create(["redis", "node"]);
    redis = await RedisServer.start({
      netns: { namespace: network.namespace("redis"), host: network.address("redis") },
    });
  });
  after(async () => {
    await redis?.kill();
    await network?.destroy();
  });

  it("a member's Redis answers from the host; a cut drops its packets until it heals", async () => {
    assert.equal(await redis.command("PING"), "+PONG");
    const fault = network.cut(HOST, "redis", 1_500);
    await fault.applied;
    assert.equal(await opens(redis.host, redis.port, 500), false, "connect through a cut");
    await withDeadline(fault.healed, 3_000, "the cut heals by itself");
    assert.equal(await opens(redis.host, redis.port, 2_000), true, "connect after the heal");
  });

  it("a one-way cut from the host leaves the reverse path: an early heal ends it", async () => {
    const fault = network.cut(HOST, "redis", 60_000, { oneWay: true });
    await fault.applied;
    assert.equal(await opens(redis.host, redis.port, 500), false);
    await fault.heal();
    assert.equal(await opens(redis.host, redis.port, 2_000), true);
  });

  it("a node's namespace reaches Redis through the bridge; a cut between members holds there", async () => {
    const probe = () =>
      execFileSync(
        "ip",
        [
          "netns",
          "exec",
          network.namespace("node"),
          "redis-cli",
          "-h",
          redis.host,
          "-p",
          String(redis.port),
          "PING",
        ],
        { encoding: "utf8", timeout: 2_000 },
      ).trim();
    assert.equal(probe(), "PONG");
    const fault = network.cut("node", "redis", 30_000);
    await fault.applied;
    assert.throws(probe);
    await network.healAll();
    assert.equal(probe(), "PONG");
  });

  it("a delay relay holds each chunk for the delay it was set to", async () => {
    const relay = await DelayRelay.start(network.hostAddress, {
      host: redis.host,
      port: redis.port,
    });
    try {
      const roundTrip = async (): Promise<number> => {
        const socket = connect({ host: relay.host, port: relay.port });
        const started = performance.now();
        socket.end("PING\r\n");
        await new Promise((resolve) => socket.once("data", resolve));
        socket.destroy();
        return performance.now() - started;
      };
      assert.ok((await roundTrip()) < 100);
      relay.setDelay(150);
      const slow = await roundTrip();
      assert.ok(slow >= 300 && slow < 1_000, `round trip ${slow} ms through 150 ms each way`);
    } finally {
      await relay.stop();
    }
  });

  it("destroy removes every namespace of the run", async () => {
    const other = await FaultNetwork.create(["x"]);
    const before = namespaces().length;
    await other.destroy();
    assert.equal(namespaces().length, before - 2);
  });
});
