import type { Cluster, Redis } from "ioredis";
import type { Done, PendingPublishes, Publisher } from "../engine/local-first.js";
import { EvalFrame, EvalScript } from "../redis/eval-frame.js";

/**
 * One PUBLISH per pair of arguments, in order: the messages of a turn in one command. EVAL, not
 * EVALSHA: a NOSCRIPT answer (a restarted or failed-over Redis) would send that batch again
 * after later ones already went through, out of order; Redis caches the script by its digest,
 * so EVAL costs it one SHA1 of these few bytes per batch.
 */
const PUBLISH_ALL = new EvalScript(
  "for i = 1, #ARGV, 2 do redis.call('publish', ARGV[i], ARGV[i + 1]) end",
);
/** Messages per EVAL at most: a turn holding more sends several, in order. */
const BATCH_MESSAGES = 256;

/**
 * The messages of one turn of the event loop leave in one EVAL that PUBLISHes each of them on
 * its channel, in order, instead of a PUBLISH each: what a receiving node, mqemitter-redis or
 * an older Sluice sees is unchanged (one message per channel, the same envelope), while this
 * node builds, writes and reads the answer of one command per turn instead of one per message
 * (that per-command work was most of what a message over Redis cost a node beyond one in
 * memory). Redis answers once it has handed every message of the batch to the subscribed
 * connections, so each message's `answered` still means durable.
 */
export class BatchedPublisher implements Publisher {
  private frame: EvalFrame | undefined;
  private answers: Done[] = [];
  private bytes = 0;
  /** The last batch's size: the next frame starts that large. */
  private lastFrameBytes = 0;

  constructor(
    private readonly redis: Redis,
    private readonly pending: PendingPublishes,
  ) {}

  publish(channel: string, message: Buffer, answered: Done): void {
    let frame = this.frame;
    if (frame === undefined) {
      frame = new EvalFrame(PUBLISH_ALL, this.lastFrameBytes);
      this.frame = frame;
      setImmediate(this.flush);
    }
    frame.string(channel);
    frame.bytesOf(message);
    this.answers.push(answered);
    this.bytes += message.length;
    this.pending.sent(message.length);
    if (this.answers.length >= BATCH_MESSAGES) this.flush();
  }

  private readonly flush = (): void => {
    const { frame, answers, bytes, pending } = this;
    if (frame === undefined) return;
    this.frame = undefined;
    this.answers = [];
    this.bytes = 0;
    this.lastFrameBytes = frame.bytes;
    const command = frame.command();
    this.redis.sendCommand(command);
    command.promise.then(
      () => {
        pending.answered(bytes);
        for (const answered of answers) answered();
      },
      (error: Error) => {
        pending.answered(bytes);
        for (const answered of answers) answered(error);
      },
    );
  };
}

/**
 * On a Redis Cluster each message is an SPUBLISH to its topic's shard channel (`channelOf`),
 * which the Cluster sends to that channel's primary: a script there could only publish on the
 * shard channels of one slot.
 */
export class ShardedPublisher implements Publisher {
  constructor(
    private readonly cluster: Cluster,
    private readonly channelOf: (topic: string) => string,
    private readonly pending: PendingPublishes,
  ) {}

  publish(topic: string, message: Buffer, answered: Done): void {
    const bytes = message.length;
    const pending = this.pending;
    pending.sent(bytes);
    this.cluster.spublish(this.channelOf(topic), message).then(
      () => {
        pending.answered(bytes);
        answered();
      },
      (error: Error) => {
        pending.answered(bytes);
        answered(error);
      },
    );
  }
}
