import type { Backend } from "../src/backend/backend.js";
import type { Emitter } from "../src/engine/emitters.js";
import type { MemoryPersistence } from "../src/engine/memory-persistence.js";
import { withDeadline } from "./deadline.js";

/** Calls held back by a test until it releases them (all, in the order they came). */
export class Holdback {
  private readonly waiting: Array<() => void> = [];
  private readonly listeners = new Set<() => void>();
  private holding = true;
  /** Calls held so far (released ones included). */
  heldCount = 0;

  /** Runs `call` now if released, else once released. */
  hold(call: () => void): void {
    if (!this.holding) {
      call();
      return;
    }
    this.waiting.push(call);
    this.heldCount++;
    for (const listener of this.listeners) listener();
  }

  /** Runs every held call, and every later one at once. */
  release(): void {
    this.holding = false;
    for (const call of this.waiting.splice(0)) call();
  }

  /** Resolves once `count` calls have been held. */
  waitForHeld(count: number, ms = 5_000): Promise<void> {
    if (this.heldCount >= count) return Promise.resolve();
    let listener: () => void = () => {};
    const reached = new Promise<void>((resolve) => {
      listener = () => {
        if (this.heldCount >= count) resolve();
      };
      this.listeners.add(listener);
    });
    return withDeadline(reached, ms, `${count} held calls`).finally(() =>
      this.listeners.delete(listener),
    );
  }
}

type Store = Backend["store"];
type Emit = Emitter["emit"];

/** The store with its emitter's emits of topics starting with `prefix` held by `holdback`. */
export function holdEmits(store: Store, prefix: string, holdback: Holdback): Store {
  const mq = store.mq as Emitter;
  const emit: Emit = mq.emit.bind(mq);
  mq.emit = ((message, callback) => {
    if (typeof message.topic === "string" && message.topic.startsWith(prefix)) {
      holdback.hold(() => emit(message, callback));
      return mq;
    }
    return emit(message, callback);
  }) as Emit;
  return store;
}

type AsyncMethodName<T> = {
  [K in keyof T]: T[K] extends (...args: never[]) => Promise<unknown> ? K : never;
}[keyof T];

/** The store with one of its persistence's async methods held by `holdback`. */
export function holdPersistence(
  store: Store,
  method: AsyncMethodName<MemoryPersistence>,
  holdback: Holdback,
): Store {
  const persistence = store.persistence as unknown as Record<
    string,
    (...args: unknown[]) => Promise<unknown>
  >;
  const original = persistence[method]?.bind(persistence);
  if (original === undefined) throw new TypeError(`the persistence has no ${String(method)}`);
  persistence[method] = (...args: unknown[]) =>
    new Promise((resolve, reject) => holdback.hold(() => original(...args).then(resolve, reject)));
  return store;
}
