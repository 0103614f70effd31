import { appendFileSync } from "node:fs";
import { LOOP_STALL_FILE_ENV } from "./loop-stalls.js";

/**
 * Preloaded into a broker process by the bench (`node --import`), never part of Sluice: records
 * each stall of the process's event loop, as the lateness of a short timer, one line
 * `<epoch ms at its end> <ms>` per stall of STALL_MS or more, in the file LOOP_STALL_FILE_ENV
 * names (loop-stalls.ts reads them). prom-client's nodejs_eventloop_lag_max_seconds is no
 * substitute at the bench's 100 ms scrapes: a scrape answered right after a stall, before the
 * histogram's own timer has run, resets the histogram and the stall is lost (a 300 ms stall
 * read as 10 ms).
 */
const PERIOD_MS = 5;
const STALL_MS = 10;

const file = process.env[LOOP_STALL_FILE_ENV];
if (file) {
  let last = performance.now();
  setInterval(() => {
    const now = performance.now();
    const late = now - last - PERIOD_MS;
    last = now;
    if (late >= STALL_MS) appendFileSync(file, `${Date.now()} ${late.toFixed(1)}\n`);
  }, PERIOD_MS).unref();
}
