/** The parts of mqemitter's matcher (a Qlobber) watched here. */
interface Matcher {
  add(topic: string, value: unknown): unknown;
  match(topic: string, context?: unknown): unknown[];
  remove(topic: string, value?: unknown): unknown;
  clear?(): unknown;
  /** Its trie's root: the first level of every filter it holds, to the rest. */
  _trie: Map<string, unknown>;
}

function isMatcher(value: unknown): value is Matcher {
  const matcher = value as Partial<Matcher> | null;
  return (
    typeof matcher?.add === "function" &&
    typeof matcher.remove === "function" &&
    typeof matcher.match === "function" &&
    matcher._trie instanceof Map
  );
}

const DOLLAR = 0x24;
/** Topics whose matches are kept; past this many the kept ones are dropped and kept anew. */
const CACHED_TOPICS = 4_096;

/**
 * Whether a message can match a subscription of this node at all. A node that only takes
 * publishers (the publishers' node of a cluster) holds no filter but aedes' own `$SYS` ones, and
 * matching each message against them (a split of its topic, a result array, a parallel run of
 * nothing) was a tenth of what the publish path allocated there.
 *
 * It counts the first levels of the matcher's filters that do not start with `$` (a wildcard
 * `+` or `#` among them), from its trie's root as adds and removes change it: a topic not
 * starting with `$` can only match a filter whose first level is one of those. Topics starting
 * with `$` always go to the matcher.
 *
 * It also keeps the matcher's answer for each topic until the filters change: the subscribers'
 * node matched every message's topic anew (a split into a new array of words, a trie walk, a
 * new array of listeners), the same topics over and over. The answer is the same array for
 * every message of a topic; mqemitter only reads it, and a change of filters starts a new set
 * of answers rather than altering one handed out.
 */
export class LocalFilters {
  private firstLevels = 0;
  /** The matcher's answer by topic, since its filters last changed. */
  private matches = new Map<string, unknown[]>();

  /** Throws at once if the emitter's matcher no longer has the expected shape. */
  constructor(emitter: object) {
    const matcher = (emitter as { _matcher?: unknown })._matcher;
    if (!isMatcher(matcher)) {
      throw new TypeError("mqemitter's matcher has an unexpected shape: filters cannot be counted");
    }
    const trie = matcher._trie;
    this.firstLevels = countOpen(trie);
    const { add, remove, clear, match } = matcher;
    const counted = (change: (topic: string, value?: unknown) => unknown) =>
      function (this: Matcher, topic: string, value?: unknown): unknown {
        const level = firstLevel(topic);
        const had = this._trie.has(level);
        const result = change.call(this, topic, value);
        counter.matches = new Map();
        if (level.charCodeAt(0) !== DOLLAR && had !== this._trie.has(level)) {
          counter.firstLevels += had ? -1 : 1;
        }
        return result;
      };
    const counter = this;
    matcher.add = counted(add);
    matcher.remove = counted(remove);
    if (typeof clear === "function") {
      matcher.clear = function (this: Matcher): unknown {
        const result = clear.call(this);
        counter.matches = new Map();
        counter.firstLevels = countOpen(this._trie);
        return result;
      };
    }
    matcher.match = function matchKept(this: Matcher, topic: string, context?: unknown) {
      if (context !== undefined) return match.call(this, topic, context);
      let found = counter.matches.get(topic);
      if (found === undefined) {
        found = match.call(this, topic);
        if (counter.matches.size >= CACHED_TOPICS) counter.matches = new Map();
        counter.matches.set(topic, found);
      }
      return found;
    };
  }

  /** Whether a message on `topic` can match a filter here. */
  mayMatch(topic: string): boolean {
    return this.firstLevels > 0 || topic.charCodeAt(0) === DOLLAR;
  }
}

function firstLevel(topic: string): string {
  const slash = topic.indexOf("/");
  return slash === -1 ? topic : topic.slice(0, slash);
}

function countOpen(trie: Map<string, unknown>): number {
  let count = 0;
  for (const level of trie.keys()) if (level.charCodeAt(0) !== DOLLAR) count++;
  return count;
}
