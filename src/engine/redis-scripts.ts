import { readdirSync, readFileSync } from "node:fs";
import type { Cluster, Redis } from "ioredis";

/** The persistence's Lua scripts, next to this module (the build copies them to dist). */
const SCRIPT_DIR = new URL("./lua/", import.meta.url);

export type ScriptName =
  | "enqueue"
  | "recordDeliveries"
  | "pubrel"
  | "acknowledge"
  | "removeSubscriptions"
  | "readQueues"
  | "readSessions"
  | "reserveIncoming";

type Reply = unknown;
type Invoke = (...keysThenArgs: Array<string | Buffer | number>) => Promise<Reply>;

/**
 * Loads `<dir>/<name>-<numberOfKeys>.lua` (by default the persistence's, in `lua/` here) as
 * ioredis commands (EVALSHA, EVAL when Redis lacks the script), named in camel case: names
 * must differ between the folders loaded on one connection. ioredis adds the key prefix to the
 * keys and, on a Cluster, routes each call to its keys' slot. A script that works on several
 * sessions at once takes its number of keys per session, repeated (all of one slot on a
 * Cluster); the count is checked against the file name.
 */
export class RedisScripts<Name extends string = ScriptName> {
  private readonly keyCounts = new Map<Name, number>();

  constructor(
    private readonly db: Redis | Cluster,
    dir: URL = SCRIPT_DIR,
  ) {
    for (const file of readdirSync(dir)) {
      const match = /^([a-z-]+)-(\d+)\.lua$/.exec(file);
      if (match === null) continue;
      const [, fileName = "", keys = "0"] = match;
      const name = fileName.replace(/-([a-z])/g, (_, letter: string) =>
        letter.toUpperCase(),
      ) as Name;
      this.keyCounts.set(name, Number(keys));
      // No fixed count: each call passes its own.
      db.defineCommand(name, { lua: readFileSync(new URL(file, dir), "utf8") });
    }
  }

  run(name: Name, keys: readonly string[], args: ReadonlyArray<string | Buffer | number>) {
    return this.invoke(name, "", keys, args);
  }

  /** As run(), bulk replies as Buffers. */
  runBuffer(name: Name, keys: readonly string[], args: ReadonlyArray<string | Buffer | number>) {
    return this.invoke(name, "Buffer", keys, args);
  }

  private invoke(
    name: Name,
    suffix: "" | "Buffer",
    keys: readonly string[],
    args: ReadonlyArray<string | Buffer | number>,
  ): Promise<Reply> {
    const unit = this.keyCounts.get(name);
    if (unit === undefined || keys.length === 0 || keys.length % unit !== 0) {
      return Promise.reject(new TypeError(`script ${name} takes keys in groups of ${unit}`));
    }
    const command = (this.db as unknown as Record<string, Invoke>)[`${name}${suffix}`];
    if (command === undefined) return Promise.reject(new TypeError(`no script ${name}`));
    return command.call(this.db, keys.length, ...keys, ...args);
  }
}
