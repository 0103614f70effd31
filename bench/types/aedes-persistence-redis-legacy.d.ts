/** aedes-persistence-redis 11.2.2 as published (no types of its own): benchmarks and upgrade tests. */
declare module "aedes-persistence-redis-legacy" {
  const persistence: (options: { conn?: unknown; cluster?: true }) => unknown;
  export default persistence;
}
