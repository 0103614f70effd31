import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { AedesPublishPacket, Client } from "aedes";
import { AttemptDeliveries } from "../../src/engine/attempt-deliveries.js";

/** A connection as the filter sees it: an object (its identity) and its session kind. */
const connection = (clean: boolean) => ({ clean }) as unknown as Client;
const message = (payload: Buffer, qos: 0 | 1 | 2 = 2) =>
  ({ cmd: "publish", topic: "t", payload, qos, retain: false }) as unknown as AedesPublishPacket;

/** Receives an envelope id's message (a new payload view per copy, as the decoder makes). */
function receive(attempts: AttemptDeliveries, id: string): AedesPublishPacket {
  const packet = message(Buffer.from("m"));
  attempts.received(id, packet);
  return packet;
}

describe("later attempts of an inbound QoS 2 message", () => {
  const allowAll = (_client: Client, packet: AedesPublishPacket) => packet;

  it("skip the connections the first attempt went to, and reach every other", () => {
    const attempts = new AttemptDeliveries();
    const forward = attempts.filterForward(allowAll);
    const had = connection(true);
    const missed = connection(true);
    assert.ok(forward(had, receive(attempts, "!o.1")));
    const later = receive(attempts, "?o.1/t.9");
    assert.equal(forward(had, later), null, "a second copy");
    // Its session's queued copy, if any, stays (aedes asks to clear it).
    assert.equal(attempts.skipped(later), true);
    assert.ok(forward(missed, later), "a connection that missed the first copy gets it");
    // A third attempt skips both.
    const third = receive(attempts, "?o.1/u.3");
    assert.equal(forward(had, third), null);
    assert.equal(forward(missed, third), null);
    // A first attempt is never held back; another origin is another message.
    assert.ok(forward(had, receive(attempts, "!o.1")));
    assert.ok(forward(had, receive(attempts, "?o.2/t.1")));
  });

  it("leave other messages alone: other ids, QoS 0 and 1, refusals of the rules", () => {
    const attempts = new AttemptDeliveries();
    const client = connection(true);
    const forward = attempts.filterForward(allowAll);
    for (const id of ["abc:1", "x", ""]) {
      const packet = receive(attempts, id);
      assert.ok(forward(client, packet));
      assert.ok(forward(client, packet));
    }
    const refuse = attempts.filterForward(() => null);
    const refused = receive(attempts, "!p.1");
    assert.equal(refuse(client, refused), null);
    assert.equal(attempts.skipped(refused), false, "the rules' refusal clears as before");
    assert.ok(forward(client, receive(attempts, "?p.1/t.1")), "a refused first copy is no copy");
    const qos1 = message(Buffer.from("m"), 1);
    attempts.received("?p.1/t.2", qos1);
    assert.ok(forward(client, qos1));
  });

  it("count a persistent session's delivery once its record is stored, or its queue resent", () => {
    const attempts = new AttemptDeliveries();
    const forward = attempts.filterForward(allowAll);
    const stored = connection(false);
    const unstored = connection(false);
    const first = receive(attempts, "!q.1");
    assert.ok(forward(stored, first));
    assert.ok(forward(unstored, first));
    attempts.written(stored, first.payload);
    const later = receive(attempts, "?q.1/t.1");
    assert.equal(forward(stored, later), null);
    assert.ok(forward(unstored, later), "not known to be written: sent again rather than lost");
    const resumed = connection(false);
    attempts.resumed(resumed, "q.1");
    assert.equal(forward(resumed, receive(attempts, "?q.1/t.2")), null);
  });

  it("skip even the first attempt at a connection whose resumed queue held the message", () => {
    // Its copies are queued before its first attempt is published (after the replicas confirm
    // them): a session resumed in between has it from its queue, then live.
    const attempts = new AttemptDeliveries();
    const forward = attempts.filterForward(allowAll);
    const resumed = connection(false);
    const other = connection(false);
    attempts.resumed(resumed, "r.1");
    const first = receive(attempts, "!r.1");
    assert.equal(forward(resumed, first), null, "a second copy");
    assert.equal(attempts.skipped(first), true, "its queued copy stays");
    attempts.written(resumed, first.payload);
    assert.equal(forward(resumed, receive(attempts, "?r.1/t.1")), null);
    assert.ok(forward(other, first), "a connection without it gets it");
  });

  it("forget origins past `size` per generation, or `windowMs`", () => {
    const attempts = new AttemptDeliveries(2, 60_000);
    const forward = attempts.filterForward(allowAll);
    const client = connection(true);
    for (const origin of ["a", "b", "c", "d", "e"])
      forward(client, receive(attempts, `!${origin}`));
    // a and b were dropped with the generation before c, d
    assert.ok(forward(client, receive(attempts, "?a/t.1")));
    assert.equal(forward(client, receive(attempts, "?d/t.1")), null);
    const timed = new AttemptDeliveries(1_000, 0);
    const timedForward = timed.filterForward(allowAll);
    timedForward(client, receive(timed, "!a"));
    timedForward(client, receive(timed, "!b"));
    timedForward(client, receive(timed, "!c"));
    assert.ok(timedForward(client, receive(timed, "?a/t.1")), "older than two windows");
  });
});
