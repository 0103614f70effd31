import assert from "node:assert/strict";
import { test } from "node:test";
import { setImmediate as nextTurn } from "node:timers/promises";
import { TurnBatches, type Waiting } from "../../src/engine/turn-batches.js";

/** A call as the batches handed it over, answered when the test says. */
interface Call {
  key: string;
  items: string[];
  answer(error?: Error): void;
}

/** Batches whose calls the test answers itself; `key` is read from the item ("k:item"). */
function recorder(paced: boolean): { batches: TurnBatches<string, string>; calls: Call[] } {
  const calls: Call[] = [];
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
    });
  return { batches: new TurnBatches(flush, { paced }), calls };
}

const add = (batches: TurnBatches<string, string>, item: string) =>
  batches.add(item.split(":")[0] ?? "", item);

test("turn batches - each turn's items go as one call per key, whatever is unanswered", async () => {
  const { batches, calls } = recorder(false);
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
  const { batches, calls } = recorder(true);
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
  const { batches, calls } = recorder(true);
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
