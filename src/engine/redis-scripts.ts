import { readdirSync, readFileSync } from "node:fs";
import type { Cluster, Redis } from "ioredis";

/** The persistence's Lua scripts, next to this module (the build copies them to dist). */
const SCRIPT_DIR = new URL("./lua/", import.meta.url);

export type ScriptName = "enqueue" | "pubrel" | "acknowledge" | "removeSubscriptions";

type Reply = unknown;
type Invoke = (...keysThenArgs: Array<string | Buffer | number>) => Promise<Reply>;

/**
 * Loads `lua/<name>-<numberOfKeys>.lua` as ioredis commands (EVALSHA, EVAL when Redis lacks the
 * script), the key count from the file name, so that ioredis adds the key prefix to the keys
 * and, on a Cluster, routes each call to its keys' slot.
 */
export class RedisScripts {
  private readonly keyCounts = new Map<ScriptName, number>();

  constructor(private readonly db: Redis | Cluster) {
    for (const file of readdirSync(SCRIPT_DIR)) {
      const match = /^([a-z-]+)-(\d+)\.lua$/.exec(file);
      if (match === null) continue;
      const [, fileName = "", keys = "0"] = match;
      const name = fileName.replace(/-([a-z])/g, (_, letter: string) =>
        letter.toUpperCase(),
      ) as ScriptName;
      this.keyCounts.set(name, Number(keys));
      db.defineCommand(name, {
        numberOfKeys: Number(keys),
        lua: readFileSync(new URL(file, SCRIPT_DIR), "utf8"),
      });
    }
  }

  run(name: ScriptName, keys: readonly string[], args: ReadonlyArray<string | Buffer | number>) {
    return this.invoke(name, "", keys, args);
  }

  /** As run(), bulk replies as Buffers. */
  runBuffer(
    name: ScriptName,
    keys: readonly string[],
    args: ReadonlyArray<string | Buffer | number>,
  ) {
    return this.invoke(name, "Buffer", keys, args);
  }

  private invoke(
    name: ScriptName,
    suffix: "" | "Buffer",
    keys: readonly string[],
    args: ReadonlyArray<string | Buffer | number>,
  ): Promise<Reply> {
    if (this.keyCounts.get(name) !== keys.length) {
      return Promise.reject(new TypeError(`script ${name} takes other keys`));
    }
    const command = (this.db as unknown as Record<string, Invoke>)[`${name}${suffix}`];
    if (command === undefined) return Promise.reject(new TypeError(`no script ${name}`));
    return command.call(this.db, ...keys, ...args);
  }
}
