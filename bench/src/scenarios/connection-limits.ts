import { openFilesLimit } from "../system/fd-limit.js";

/** Descriptors a process needs besides its connections (stdio, listeners, Redis, logs). */
const SPARE_DESCRIPTORS = 200;

/**
 * The connection count a scenario can really open: the broker holds one descriptor per
 * connection, so N is capped under the open-files limit; the note says when it was.
 */
export function cappedConnections(requested: number): { count: number; note: string } {
  const limit = openFilesLimit();
  const cap = limit - SPARE_DESCRIPTORS;
  if (requested <= cap)
    return {
      count: requested,
      note: `open-files limit ${limit} (ulimit -n), enough for ${requested.toLocaleString("en-US")} connections`,
    };
  return {
    count: cap,
    note: `capped at ${cap.toLocaleString("en-US")} connections (asked ${requested.toLocaleString("en-US")}): the open-files limit is ${limit} and cannot be raised from here`,
  };
}

/** Generator processes for `count` connections: one per 5,000, at least one, at most 4. */
export function generatorProcessesFor(count: number): number {
  return Math.min(4, Math.max(1, Math.ceil(count / 5_000)));
}
