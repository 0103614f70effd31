import assert from "node:assert/strict";
import { test } from "node:test";
import { setImmediate as nextTurn } from "node:timers/promises";
import { TurnBatches, type TurnBatchOptions, type Waiting } from "../../src/engine/turn-batches.js";

/** A call as the batches handed it over, answered when the test says. */
interface Call {
  key: string;
  items: string[];
  answer(error?: Error): void;
}

/** Batches whose calls the test answers itself; `key` is read from the item ("k:item"). */
function recorder(options: TurnBatchOptions): {
  batches: TurnBatches<string, string>;
  calls: Call[];
  /** Resolves once the batches handed over their `count`th call; rejects after `ms`. */
  callNumber(count: number, ms: number): Promise<Call>;
} {
  const calls: Call[] = [];
  const waiters: Array<() => void> = [];
  const flush = (call: Array<Waiting<string, string>>): Promise<void> =>
    new Promise((resolve, reject) => {
      calls.push({
        key: call[0]?.item.split(":")[0] ?? "",
        items: call.map(({ item }) => item),
        answer(error) {
          for (const waiting of call)
            if (error) waiting.reject(error);
            else waiting.resolve(`done ${waiting.item}`);
          if (error) reject(error);
          else resolve();
        },
      });
      for (const waiter of waiters.splice(0)) waiter();
    });
  const callNumber = (count: number, ms: number): Promise<Call> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no call ${count} in ${ms} ms`)), ms);
      const check = (): void => {
        const call = calls[count - 1];
        if (call === undefined) waiters.push(check);
        else {
          clearTimeout(timer);
          resolve(call);
        }
      };
      check();
    });
  return { batches: new TurnBatches(flush, options), calls, callNumber };
}

const add = (batches: TurnBatches<string, string>, item: string) =>
  batches.add(item.split(":")[0] ?? "", item);

test("turn batches - each turn's items go as one call per key, whatever is unanswered", async () => {
  const { batches, calls } = recorder({});
  const first = [add(batches, "a:1"), add(batches, "a:2"), add(batches, "b:1")];
  await nextTurn();
  add(batches, "a:3");
  await nextTurn();
  assert.deepEqual(
    calls.map((c) => c.items),
    [["a:1", "a:2"], ["b:1"], ["a:3"]],
  );
  for (const call of calls) call.answer();
  assert.deepEqual(await Promise.all(first), ["done a:1", "done a:2", "done b:1"]);
});

test("paced turn batches - what comes while a key's call awaits its answer goes as its next call, in order", async () => {
  const { batches, calls } = recorder({ paced: true });
  const answers = [add(batches, "a:1")];
  await nextTurn();
  assert.equal(calls.length, 1);
  // Three turns while a's call is unanswered: nothing more goes for a; b is not held by a.
  for (const item of ["a:2", "a:3", "b:1", "a:4"]) {
    answers.push(add(batches, item));
    await nextTurn();
  }
  assert.deepEqual(
    calls.map((c) => c.items),
    [["a:1"], ["b:1"]],
  );
  calls[0]?.answer();
  await nextTurn();
  await nextTurn();
  assert.deepEqual(
    calls.map((c) => c.items),
    [["a:1"], ["b:1"], ["a:2", "a:3", "a:4"]],
  );
  calls[1]?.answer();
  calls[2]?.answer();
  assert.deepEqual(await Promise.all(answers), [
    "done a:1",
    "done a:2",
    "done a:3",
    "done b:1",
    "done a:4",
  ]);
  // Nothing in flight: the next item goes at the end of its own turn.
  add(batches, "a:5");
  await nextTurn();
  assert.deepEqual(calls[3]?.items, ["a:5"]);
});

test("paced turn batches - a call that failed lets the next one go", async () => {
  const { batches, calls } = recorder({ paced: true });
  const failed = add(batches, "a:1");
  await nextTurn();
  const next = add(batches, "a:2");
  await nextTurn();
  assert.equal(calls.length, 1);
  calls[0]?.answer(new Error("Redis did not answer"));
  await assert.rejects(failed, /did not answer/);
  await nextTurn();
  assert.deepEqual(calls[1]?.items, ["a:2"]);
  calls[1]?.answer();
  assert.equal(await next, "done a:2");
});

test("paced turn batches with a linger - calls gather for it only while they carry more than one item", async () => {
  const lingerMs = 40;
  const { batches, calls, callNumber } = recorder({ paced: true, lingerMs });
  const answers = [add(batches, "a:1")];
  await nextTurn();
  // Quiet: one item goes at the end of its turn.
  assert.deepEqual(calls[0]?.items, ["a:1"]);
  calls[0]?.answer();
  await nextTurn();
  answers.push(add(batches, "a:2"), add(batches, "a:3"));
  await nextTurn();
  assert.deepEqual(calls[1]?.items, ["a:2", "a:3"]);
  calls[1]?.answer();
  await nextTurn();
  // Calls are shared now: the next one waits for the linger, gathering what comes meanwhile.
  const lingerFrom = performance.now();
  answers.push(add(batches, "a:4"));
  await nextTurn();
  answers.push(add(batches, "a:5"));
  await nextTurn();
  assert.equal(calls.length, 2, "nothing goes before the linger ends");
  const third = await callNumber(3, 5_000);
  assert.deepEqual(third.items, ["a:4", "a:5"]);
  assert.ok(performance.now() - lingerFrom >= lingerMs - 1, "it went after the linger");
  third.answer();
  await nextTurn();
  // Idle again, and the last call carried two: a lone item waits for the linger once...
  answers.push(add(batches, "a:6"));
  (await callNumber(4, 5_000)).answer();
  await nextTurn();
  // ...and, that call having carried one, the next goes at the end of its turn.
  answers.push(add(batches, "a:7"));
  await nextTurn();
  assert.deepEqual(calls[4]?.items, ["a:7"]);
  calls[4]?.answer();
  assert.equal((await Promise.all(answers)).length, 7);
});
