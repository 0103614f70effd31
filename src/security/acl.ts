import { basename, extname } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { ConfigError } from "../errors.js";
import { invalidTopicFilter } from "../protocol/topic-rules.js";
import type { AclSubject, Authorizer } from "./authorizer.js";
import { ACL_FILE_MAX_BYTES, readSecurityFile } from "./read-security-file.js";

export type AclAccess = "read" | "write" | "readwrite" | "deny";

export interface Rule {
  access: AclAccess;
  /** The rule's topic filter, split into levels once at load time. */
  levels: readonly string[];
  /** For `pattern` rules: which levels contain %c or %u. */
  substituted: boolean;
  usesUsername: boolean;
}

const ACCESS = new Set<AclAccess>(["read", "write", "readwrite", "deny"]);

/**
 * Topic authorization from an ACL file, deny by default, with Mosquitto's meaning:
 * `topic` lines before the first `user` line are for anonymous clients, `user` sections for
 * that user, `pattern` lines (with %c client id, %u username) for everyone. Sluice adds
 * `group` sections: rules (templates with %c and %u, like patterns) for the registered
 * devices in that group. A matching deny rule wins over any allow rule. The YAML form
 * (`anonymous`, `users`, `groups`, `patterns`) means the same. `canRead` runs for every delivery: rules are split into levels at load time.
 */
export class Acl implements Authorizer {
  /**
   * Publish and read decisions already made, by need, identity and topic. A device publishes
   * to and reads from the same few topics over and over, and a decision walks every rule of its
   * user and every pattern: with 1,000 rules that cost 60 % of a node's QoS 1 throughput
   * (bench `security-overhead`). A reloaded ACL is a new Acl with an empty cache.
   */
  private readonly decisions = new Map<string, boolean>();

  /** Use Acl.load or Acl.parse. */
  constructor(
    private readonly anonymous: readonly Rule[],
    private readonly users: ReadonlyMap<string, readonly Rule[]>,
    private readonly patterns: readonly Rule[],
    private readonly groups: ReadonlyMap<string, readonly Rule[]> = new Map(),
  ) {}

  get ruleCount(): number {
    let count = this.anonymous.length + this.patterns.length;
    for (const rules of this.users.values()) count += rules.length;
    for (const rules of this.groups.values()) count += rules.length;
    return count;
  }

  static async load(path: string): Promise<Acl> {
    const text = await readSecurityFile(path, ACL_FILE_MAX_BYTES);
    const yaml = [".yaml", ".yml"].includes(extname(path).toLowerCase());
    return Acl.parse(text, yaml ? "yaml" : "mosquitto", basename(path));
  }

  static parse(text: string, format: "mosquitto" | "yaml", source: string): Acl {
    return format === "yaml" ? parseYamlAcl(text, source) : parseMosquittoAcl(text, source);
  }

  canPublish(subject: AclSubject, topic: string): boolean {
    return this.decideTopic(subject, topic, "write");
  }

  canRead(subject: AclSubject, topic: string): boolean {
    return this.decideTopic(subject, topic, "read");
  }

  private decideTopic(subject: AclSubject, topic: string, need: "read" | "write"): boolean {
    // NUL cannot occur in a client id, a username or a topic (MQTT-1.5.3-2): no collisions.
    const groups = subject.device?.groups;
    const key = `${need}\u0000${subject.username ?? "\u0000"}\u0000${subject.clientId}\u0000${topic}${groups === undefined || groups.length === 0 ? "" : `\u0000${groups.join("\u0000")}`}`;
    const known = this.decisions.get(key);
    if (known !== undefined) return known;
    const decision = this.decide(subject, topic.split("/"), need, matchesTopic);
    // Bounded: a flood of distinct topics starts the cache over rather than growing it.
    if (this.decisions.size >= DECISION_CACHE_SIZE) this.decisions.clear();
    this.decisions.set(key, decision);
    return decision;
  }

  /**
   * A filter is allowed only where reading is allowed for every topic it can match, and no
   * deny rule covers it entirely; partial overlaps with deny rules are left to `canRead`,
   * which filters each delivery.
   */
  canSubscribe(subject: AclSubject, filter: string): boolean {
    return this.decide(subject, filter.split("/"), "read", covers);
  }

  private decide(
    subject: AclSubject,
    levels: readonly string[],
    need: "read" | "write",
    match: (rule: readonly string[], levels: readonly string[]) => boolean,
  ): boolean {
    const own =
      subject.username === undefined ? this.anonymous : (this.users.get(subject.username) ?? NONE);
    let allowed = false;
    for (const rule of own) {
      if (!match(rule.levels, levels)) continue;
      if (rule.access === "deny") return false;
      if (grants(rule.access, need)) allowed = true;
    }
    for (const group of subject.device?.groups ?? NO_GROUPS) {
      for (const rule of this.groups.get(group) ?? NONE) {
        const ruleLevels = rule.substituted ? substitute(rule, subject) : rule.levels;
        if (ruleLevels === undefined || !match(ruleLevels, levels)) continue;
        if (rule.access === "deny") return false;
        if (grants(rule.access, need)) allowed = true;
      }
    }
    for (const rule of this.patterns) {
      const ruleLevels = rule.substituted ? substitute(rule, subject) : rule.levels;
      if (ruleLevels === undefined || !match(ruleLevels, levels)) continue;
      if (rule.access === "deny") return false;
      if (grants(rule.access, need)) allowed = true;
    }
    return allowed;
  }
}

const NONE: readonly Rule[] = [];
const NO_GROUPS: readonly string[] = [];
/** Decisions kept per ACL (a few MB at most) before the cache starts over. */
const DECISION_CACHE_SIZE = 50_000;

function grants(access: AclAccess, need: "read" | "write"): boolean {
  return access === "readwrite" || access === need;
}

/**
 * A pattern rule's levels for one client, or undefined when the rule cannot apply: %u for a
 * client without a username, or an id or name containing + # or /, which would otherwise widen
 * the rule (client id `#` must never read everything).
 */
function substitute(rule: Rule, subject: AclSubject): readonly string[] | undefined {
  const { clientId, username } = subject;
  if (rule.usesUsername && (username === undefined || unsafe(username))) return undefined;
  if (unsafe(clientId)) return undefined;
  return rule.levels.map((level) =>
    level.includes("%") ? level.replaceAll("%c", clientId).replaceAll("%u", username ?? "") : level,
  );
}

function unsafe(value: string): boolean {
  return value.includes("+") || value.includes("#") || value.includes("/");
}

/** MQTT matching of a topic against a filter; wildcards first do not match `$` topics [MQTT-4.7.2-1]. */
function matchesTopic(filter: readonly string[], topic: readonly string[]): boolean {
  if ((filter[0] === "#" || filter[0] === "+") && topic[0]?.startsWith("$")) return false;
  for (let i = 0; i < filter.length; i++) {
    const f = filter[i];
    if (f === "#") return true; // also the parent: `a/#` matches `a`
    if (i >= topic.length) return false;
    if (f !== "+" && f !== topic[i]) return false;
  }
  return filter.length === topic.length;
}

/** Whether every topic `inner` can match is matched by `outer` (both filters). */
function covers(outer: readonly string[], inner: readonly string[]): boolean {
  const outerWild = outer[0] === "#" || outer[0] === "+";
  if (outerWild && inner[0]?.startsWith("$")) return false;
  for (let i = 0; i < outer.length; i++) {
    const o = outer[i];
    if (o === "#") return true;
    if (i >= inner.length) return false;
    const n = inner[i];
    if (n === "#") return false;
    if (o === "+") continue;
    if (n === "+" || n !== o) return false;
  }
  return outer.length === inner.length;
}

function makeRule(access: AclAccess, topic: string, pattern: boolean): Rule {
  const usesUsername = pattern && topic.includes("%u");
  return {
    access,
    levels: topic.split("/"),
    substituted: pattern && (usesUsername || topic.includes("%c")),
    usesUsername,
  };
}

function ruleProblem(topic: string): string | undefined {
  if (topic === "") return "missing topic";
  return invalidTopicFilter(topic);
}

function parseMosquittoAcl(text: string, source: string): Acl {
  const anonymous: Rule[] = [];
  const users = new Map<string, Rule[]>();
  const groups = new Map<string, Rule[]>();
  const patterns: Rule[] = [];
  const problems: string[] = [];
  let section: Rule[] = anonymous;
  let inGroup = false;

  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const at = `${source}:${index + 1}`;
    const [keyword, ...rest] = line.split(/\s+/);
    if (keyword === "user" || keyword === "group") {
      const name = line.slice(keyword.length).trim();
      if (name === "") {
        problems.push(`${at}: ${keyword} needs a name`);
        return;
      }
      const sections = keyword === "user" ? users : groups;
      section = sections.get(name) ?? [];
      sections.set(name, section);
      inGroup = keyword === "group";
      return;
    }
    if (keyword !== "topic" && keyword !== "pattern") {
      problems.push(
        `${at}: unknown keyword ${JSON.stringify(keyword)} (expected topic, pattern, user or group)`,
      );
      return;
    }
    let access: AclAccess = "readwrite";
    let topic = line.slice(keyword.length).trim();
    if (ACCESS.has(rest[0] as AclAccess) && rest.length > 1) {
      access = rest[0] as AclAccess;
      topic = topic.slice(access.length).trim();
    }
    const problem = ruleProblem(topic);
    if (problem) {
      problems.push(`${at}: ${problem}`);
      return;
    }
    if (keyword === "pattern") patterns.push(makeRule(access, topic, true));
    // A group's rules are templates for each of its devices, as patterns are for everyone.
    else section.push(makeRule(access, topic, inGroup));
  });
  if (problems.length > 0) throw new ConfigError(problems);
  return newAcl(anonymous, users, patterns, groups);
}

const yamlRule = z.strictObject({
  topic: z.string(),
  access: z.enum(["read", "write", "readwrite", "deny"]).default("readwrite"),
});
const yamlAcl = z.strictObject({
  anonymous: z.array(yamlRule).default([]),
  users: z.record(z.string().min(1), z.array(yamlRule)).default({}),
  groups: z.record(z.string().min(1), z.array(yamlRule)).default({}),
  patterns: z.array(yamlRule).default([]),
});

function parseYamlAcl(text: string, source: string): Acl {
  let document: unknown;
  try {
    document = parseYaml(text) ?? {};
  } catch (error) {
    throw new ConfigError([
      `${source}: YAML syntax error: ${(error as Error).message.split("\n")[0]}`,
    ]);
  }
  const parsed = yamlAcl.safeParse(document);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((issue) => {
        const path = issue.path.join(".") || "(root)";
        const keys =
          issue.code === "unrecognized_keys"
            ? `: unknown key ${issue.keys.join(", ")}`
            : `: ${issue.message}`;
        return `${source}: ${path}${keys}`;
      }),
    );
  }
  const problems: string[] = [];
  const build = (rules: z.output<typeof yamlRule>[], where: string, pattern: boolean): Rule[] =>
    rules.flatMap((r, i) => {
      const problem = ruleProblem(r.topic);
      if (problem) {
        problems.push(`${source}: ${where}[${i}].topic: ${problem}`);
        return [];
      }
      return [makeRule(r.access, r.topic, pattern)];
    });
  const anonymous = build(parsed.data.anonymous, "anonymous", false);
  const users = new Map(
    Object.entries(parsed.data.users).map(
      ([name, rules]) => [name, build(rules, `users.${name}`, false)] as const,
    ),
  );
  const groups = new Map(
    Object.entries(parsed.data.groups).map(
      ([name, rules]) => [name, build(rules, `groups.${name}`, true)] as const,
    ),
  );
  const patterns = build(parsed.data.patterns, "patterns", true);
  if (problems.length > 0) throw new ConfigError(problems);
  return newAcl(anonymous, users, patterns, groups);
}

function newAcl(
  anonymous: Rule[],
  users: Map<string, Rule[]>,
  patterns: Rule[],
  groups: Map<string, Rule[]>,
): Acl {
  return new Acl(anonymous, users, patterns, groups);
}
