import { execFile, execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { cleanUpOnExit } from "./reaper.js";

const run = promisify(execFile);

/** The test process' end of the network, usable as an end of a fault. */
export const HOST = "host";
const HUB = "hub";
const TABLE = "sluice_chaos";
const PREFIX = "sluice-chaos-";
const LOCKS = join(tmpdir(), "sluice-chaos-subnets");

let serial = 0;

/**
 * Real network faults between processes of a test, in Linux network namespaces: each member
 * (Redis, a Sluice node) gets a namespace of its own, joined to the others through a bridge in
 * a hub namespace by a veth pair. The test process (its MQTT clients, HAProxy) reaches them over
 * one more veth pair, from the host end, the `host` member. Faults are nftables rules in the
 * members' namespaces: a link cut one way or both (packets silently dropped, as a broken switch
 * or a firewall does, so TCP sees no reset and retransmits), and random packet loss.
 *
 * Why namespaces and nftables rather than Toxiproxy: a cut here is a cut of the kernel's path,
 * which TCP itself has to notice (retransmission, keepalive), as in a real partition; a TCP
 * proxy can only close or stall a connection it relays, and every node would have to be
 * configured through it. Latency is the exception: this machine's kernel has no `sch_netem`
 * (CONFIG_NET_SCH_NETEM is not set, and there are no modules to load), so delay is added by a
 * TCP relay (harness/delay-relay.ts), Toxiproxy's way.
 *
 * Only addresses the network makes are used: a private /24 (10.213.N.0/24, N locked per run),
 * inside namespaces named `sluice-chaos-<pid>-<serial>-<member>`. Everything is removed by `destroy()`,
 * at the test process' exit if the test could not, and at the next start if that process was
 * killed outright (namespaces and locks of dead pids).
 */
export class FaultNetwork {
  /** The faults in force, per member namespace that enforces them. */
  private readonly faults = new Set<Fault>();
  private destroyed = false;
  private readonly release: () => void;

  /** `<pid>-<serial>`: several networks in one test process never share a name. */
  private readonly run = `${process.pid}-${serial++}`;

  private constructor(
    private readonly subnet: number,
    private readonly members: ReadonlyMap<string, number>,
  ) {
    this.release = cleanUpOnExit(() => this.destroySync());
  }

  /** The address of the test process' end of the network (HAProxy, the test's own clients). */
  get hostAddress(): string {
    return `10.213.${this.subnet}.1`;
  }

  /** The namespace a member's processes run in (`ip netns exec <namespace> ...`). */
  namespace(member: string): string {
    this.indexOf(member);
    return namespaceName(this.run, member);
  }

  /** The member's address on the network. */
  address(member: string): string {
    if (member === HOST) return this.hostAddress;
    return `10.213.${this.subnet}.${10 + this.indexOf(member)}`;
  }

  /** Builds the network for these members (names of [a-z0-9-], at most 12 members). */
  static async create(members: readonly string[]): Promise<FaultNetwork> {
    if (members.length > 12 || new Set(members).size !== members.length) {
      throw new Error("at most 12 members, each named once");
    }
    for (const member of members) {
      if (!/^[a-z0-9-]{1,20}$/.test(member) || member === HOST || member === HUB) {
        throw new Error(`bad member name: ${member}`);
      }
    }
    await removeStale();
    const subnet = lockSubnet();
    const network = new FaultNetwork(subnet, new Map(members.map((m, i) => [m, i])));
    try {
      await network.build();
    } catch (error) {
      await network.destroy();
      throw error;
    }
    return network;
  }

  /**
   * Drops every packet from `from` to `to` (and back, unless `oneWay`) for `ms`, then heals by
   * itself; `heal()` on the result ends it sooner. Either end may be `"host"`.
   */
  cut(from: string, to: string, ms: number, options: { oneWay?: boolean } = {}): Fault {
    return this.add({ from, to, oneWay: options.oneWay === true, lossPercent: 100 }, ms);
  }

  /** Drops `percent` % of the packets between `a` and `b`, each way, at random, for `ms`. */
  loss(a: string, b: string, percent: number, ms: number): Fault {
    if (!(percent > 0 && percent < 100)) throw new Error("loss: a percentage between 0 and 100");
    return this.add({ from: a, to: b, oneWay: false, lossPercent: percent }, ms);
  }

  /** Removes every fault in force (each test's `finally`). */
  async healAll(): Promise<void> {
    for (const fault of this.faults) fault.clearTimer();
    this.faults.clear();
    await this.apply();
  }

  /** Deletes the namespaces (their processes' sockets go with them) and the subnet's lock. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroySync();
  }

  private destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const fault of this.faults) fault.clearTimer();
    this.faults.clear();
    for (const member of [...this.members.keys(), HUB]) {
      try {
        execFileSync("ip", ["netns", "del", namespaceName(this.run, member)], {
          stdio: "ignore",
        });
      } catch {
        // not made, or gone already
      }
    }
    unlockSubnet(this.subnet);
    this.release();
  }

  private add(rule: Rule, ms: number): Fault {
    this.address(rule.from);
    this.address(rule.to);
    if (rule.from === rule.to) throw new Error("a fault needs two different members");
    if (!(ms > 0 && ms <= 300_000)) throw new Error("a fault lasts between 0 and 300 s");
    const fault: Fault = new Fault(rule, ms, () => this.remove(fault));
    this.faults.add(fault);
    fault.applied = this.apply();
    return fault;
  }

  private async remove(fault: Fault): Promise<void> {
    if (!this.faults.delete(fault)) return;
    await this.apply();
  }

  /**
   * Writes each member's rules afresh from the faults in force, in one nft transaction per
   * namespace. A rule is enforced where it can be: in the receiving member's input chain, or
   * for packets to the host, in the sender's output chain (the host's own rules are never
   * touched).
   */
  private async apply(): Promise<void> {
    if (this.destroyed) return;
    const perMember = new Map<string, string[]>([...this.members.keys()].map((m) => [m, []]));
    for (const fault of this.faults) {
      const { from, to, oneWay, lossPercent } = fault.rule;
      const directions: Array<[string, string]> = oneWay
        ? [[from, to]]
        : [
            [from, to],
            [to, from],
          ];
      const verdict =
        lossPercent >= 100 ? "drop" : `numgen random mod 100 < ${Math.round(lossPercent)} drop`;
      for (const [sender, receiver] of directions) {
        if (receiver !== HOST) {
          perMember
            .get(receiver)
            ?.push(`add rule inet ${TABLE} input ip saddr ${this.address(sender)} ${verdict}`);
        } else {
          perMember
            .get(sender)
            ?.push(`add rule inet ${TABLE} output ip daddr ${this.hostAddress} ${verdict}`);
        }
      }
    }
    await Promise.all(
      [...perMember].map(([member, rules]) =>
        nft(this.namespace(member), [`flush table inet ${TABLE}`, ...rules]),
      ),
    );
  }

  private indexOf(member: string): number {
    const index = this.members.get(member);
    if (index === undefined) throw new Error(`not a member of this network: ${member}`);
    return index;
  }

  private async build(): Promise<void> {
    const hub = namespaceName(this.run, HUB);
    const ip = (...args: string[]) => run("ip", args);
    const inHub = (...args: string[]) => run("ip", ["netns", "exec", hub, "ip", ...args]);
    await ip("netns", "add", hub);
    await inHub("link", "set", "lo", "up");
    await inHub("link", "add", "br0", "type", "bridge");
    await inHub("link", "set", "br0", "up");
    // The host's end: an interface of its own, named after the pid, gone with the hub.
    const hostEnd = interfaceName(this.run);
    await ip("link", "add", hostEnd, "type", "veth", "peer", "name", "up0", "netns", hub);
    await ip("addr", "add", `${this.hostAddress}/24`, "dev", hostEnd);
    await ip("link", "set", hostEnd, "up");
    await inHub("link", "set", "up0", "master", "br0", "up");
    for (const [member, index] of this.members) {
      const ns = namespaceName(this.run, member);
      const inMember = (...args: string[]) => run("ip", ["netns", "exec", ns, "ip", ...args]);
      await ip("netns", "add", ns);
      await inMember("link", "set", "lo", "up");
      await inHub("link", "add", `m${index}`, "type", "veth", "peer", "name", "eth0", "netns", ns);
      await inHub("link", "set", `m${index}`, "master", "br0", "up");
      await inMember("addr", "add", `${this.address(member)}/24`, "dev", "eth0");
      await inMember("link", "set", "eth0", "up");
      await nft(ns, [
        `add table inet ${TABLE}`,
        `add chain inet ${TABLE} input { type filter hook input priority 0; policy accept; }`,
        `add chain inet ${TABLE} output { type filter hook output priority 0; policy accept; }`,
      ]);
    }
  }
}

interface Rule {
  from: string;
  to: string;
  oneWay: boolean;
  lossPercent: number;
}

/** A fault in force: it ends by itself after its time, or sooner by `heal()`. */
export class Fault {
  /** Resolves once the fault's rules are in force. */
  applied: Promise<void> = Promise.resolve();
  /** Resolves once the fault is removed again. */
  readonly healed: Promise<void>;
  private readonly timer: NodeJS.Timeout;
  private resolveHealed: () => void = () => {};

  constructor(
    readonly rule: Rule,
    ms: number,
    private readonly removeRules: () => Promise<void>,
  ) {
    this.healed = new Promise((resolve) => {
      this.resolveHealed = resolve;
    });
    this.timer = setTimeout(() => void this.heal(), ms);
  }

  async heal(): Promise<void> {
    clearTimeout(this.timer);
    await this.applied.catch(() => {});
    await this.removeRules();
    this.resolveHealed();
  }

  clearTimer(): void {
    clearTimeout(this.timer);
    this.resolveHealed();
  }
}

function namespaceName(run: string, member: string): string {
  return `${PREFIX}${run}-${member}`;
}

/** Interface names are at most 15 characters: a prefix, the pid and serial in base 36. */
function interfaceName(run: string): string {
  const [pid, count] = run.split("-").map(Number);
  return `sc${(pid ?? 0).toString(36)}x${(count ?? 0).toString(36)}`;
}

async function nft(namespace: string, commands: string[]): Promise<void> {
  const child = execFile("ip", ["netns", "exec", namespace, "nft", "-f", "-"]);
  const done = new Promise<void>((resolve, reject) => {
    let stderr = "";
    child.stderr?.on("data", (chunk: Buffer | string) => {
      stderr += String(chunk);
    });
    child.once("error", reject);
    child.once("exit", (code) =>
      code === 0 ? resolve() : reject(new Error(`nft in ${namespace} failed: ${stderr}`)),
    );
  });
  child.stdin?.end(`${commands.join("\n")}\n`);
  await done;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Namespaces and subnet locks of earlier runs whose process is gone (killed outright). */
async function removeStale(): Promise<void> {
  const { stdout } = await run("ip", ["netns", "list"]);
  for (const line of stdout.split("\n")) {
    const name = line.split(" ")[0] ?? "";
    const match = new RegExp(`^${PREFIX}(\\d+)-`).exec(name);
    if (match && !alive(Number(match[1]))) {
      await run("ip", ["netns", "del", name]).catch(() => {});
    }
  }
}

/**
 * A /24 no other live run holds: a lock folder per subnet (mkdir is atomic), holding the pid
 * of the run; a lock whose pid is gone is taken over.
 */
function lockSubnet(): number {
  mkdirSync(LOCKS, { recursive: true });
  for (let attempt = 0; attempt < 254; attempt++) {
    const subnet = ((process.pid + attempt) % 254) + 1;
    const lock = join(LOCKS, String(subnet));
    try {
      mkdirSync(lock);
    } catch {
      let owner = 0;
      try {
        owner = Number(readFileSync(join(lock, "pid"), "utf8"));
      } catch {
        // being written: taken
        continue;
      }
      if (owner === 0 || alive(owner)) continue;
      rmSync(lock, { recursive: true, force: true });
      try {
        mkdirSync(lock);
      } catch {
        continue;
      }
    }
    writeFileSync(join(lock, "pid"), String(process.pid));
    return subnet;
  }
  throw new Error("no free subnet for a fault network");
}

function unlockSubnet(subnet: number): void {
  rmSync(join(LOCKS, String(subnet)), { recursive: true, force: true });
}
