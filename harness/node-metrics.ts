/** A node's /metrics, read as a test reads it. */

/** The value of the first series of `name` (any labels), NaN when the node has none. */
export async function metricValue(httpUrl: string, name: string): Promise<number> {
  const text = await fetch(`${httpUrl}/metrics`).then((r) => r.text());
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.slice(line.lastIndexOf(" ") + 1));
}

/** The sum of every series of `name` (e.g. sluice_connections over its listeners). */
export async function metricSum(httpUrl: string, name: string): Promise<number> {
  const text = await fetch(`${httpUrl}/metrics`).then((r) => r.text());
  return text
    .split("\n")
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
}
