const escapeRegExp = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Matches names against patterns where `*` stands for any run of characters. */
export class NamePatterns {
  private readonly exact: ReadonlySet<string>;
  private readonly wildcards: readonly RegExp[];

  constructor(patterns: readonly string[]) {
    this.exact = new Set(patterns.filter((pattern) => !pattern.includes("*")));
    this.wildcards = patterns
      .filter((pattern) => pattern.includes("*"))
      .map((pattern) => new RegExp(`^${pattern.split("*").map(escapeRegExp).join(".*")}$`, "s"));
  }

  matches(name: string): boolean {
    return this.exact.has(name) || this.wildcards.some((pattern) => pattern.test(name));
  }
}
