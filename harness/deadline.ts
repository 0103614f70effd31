/** Resolves as `promise` does, or rejects naming `what` if it has not settled within `ms`. */
export function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

/**
 * Lets `turns` event-loop turns pass: for asserting that something did not happen, once every
 * step it would take (promise continuations, setImmediate callbacks, in-process stream
 * reads) has had the chance to run.
 */
export async function settleTurns(turns = 20): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((resolve) => setImmediate(resolve));
}
