import assert from "node:assert/strict";
import { createHook } from "node:async_hooks";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { ConfigError } from "../../src/errors.js";
import { deleteUser, PasswordFile, setUser } from "../../src/security/password-file.js";
import { hashPassword, parseHash, verifyPassword } from "../../src/security/password-hash.js";

const run = promisify(execFile);

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-passwd-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Writes `text` to a fresh file in the temp folder and returns its path. */
let fileCount = 0;
async function fileWith(text: string): Promise<string> {
  fileCount += 1;
  const path = join(dir, `passwd-${fileCount}`);
  await writeFile(path, text);
  return path;
}

/** The problem lines loading `text` from a file named `passwd` produces, or [] when it loads. */
async function loadProblems(text: string): Promise<readonly string[]> {
  const path = join(await mkdtemp(join(dir, "load-")), "passwd");
  await writeFile(path, text);
  try {
    await PasswordFile.load(path);
    return [];
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    return error.problems;
  }
}

/**
 * Runs `fn` and counts the native crypto jobs it starts, by async-resource type
 * (`SCRYPTREQUEST`, `PBKDF2REQUEST`): proof that a key derivation really ran, without a spy.
 */
async function cryptoJobsDuring(fn: () => Promise<unknown>): Promise<Map<string, number>> {
  const jobs = new Map<string, number>();
  const hook = createHook({
    init(_id, type) {
      if (type.endsWith("REQUEST")) jobs.set(type, (jobs.get(type) ?? 0) + 1);
    },
  });
  hook.enable();
  try {
    await fn();
  } finally {
    hook.disable();
  }
  return jobs;
}

/** Runs the real mosquitto_passwd in batch mode; CI installs it. */
async function mosquittoPasswd(args: string[]): Promise<void> {
  try {
    await run("mosquitto_passwd", args);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") {
      assert.fail("mosquitto_passwd is not installed (apt-get install mosquitto); CI installs it");
    }
    throw error;
  }
}

const pw = (text: string): Buffer => Buffer.from(text, "utf8");

describe("password hash", () => {
  it("hashPassword - writes a PHC scrypt string with a 16-byte salt and a 32-byte key", async () => {
    const encoded = await hashPassword("correct horse");
    const match = /^\$scrypt\$ln=14,r=8,p=1\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(encoded);
    assert.ok(match, `unexpected format: ${encoded}`);
    assert.equal(Buffer.from(match[1] ?? "", "base64").length, 16);
    assert.equal(Buffer.from(match[2] ?? "", "base64").length, 32);
    assert.ok(!encoded.includes("correct horse"));
  });

  it("hashPassword - salts: the same password hashes differently each time", async () => {
    const [a, b] = await Promise.all([hashPassword("same"), hashPassword("same")]);
    assert.notEqual(a, b);
  });

  it("verifyPassword - round trip accepts the password and refuses others", async () => {
    const encoded = await hashPassword(pw("s3cret ünïcode"));
    assert.equal(await verifyPassword(pw("s3cret ünïcode"), encoded), true);
    assert.equal(await verifyPassword(pw("s3cret ünïcodf"), encoded), false);
    assert.equal(await verifyPassword(pw(""), encoded), false);
    // A string and its UTF-8 bytes hash alike.
    assert.equal(await verifyPassword(pw("x"), await hashPassword("x")), true);
  });

  it("verifyPassword - an unparseable hash verifies as false and does not throw", async () => {
    const good = await hashPassword("pw");
    const [, , , salt, key] = good.split("$");
    for (const encoded of [
      "",
      "pw",
      "$",
      "$5$abc$def",
      "$scrypt$",
      `$scrypt$ln=14,r=8$${salt}$${key}`,
      `$scrypt$ln=x,r=8,p=1$${salt}$${key}`,
      `$scrypt$ln=0,r=8,p=1$${salt}$${key}`,
      `$scrypt$ln=14,r=8,p=1$$${key}`,
      `$scrypt$ln=14,r=8,p=1$${salt}$`,
      "$6$c2FsdA==$dG9vIHNob3J0",
      "$7$abc$c2FsdA==$dG9vIHNob3J0",
      "$7$-5$c2FsdA==$dG9vIHNob3J0",
    ]) {
      assert.equal(await verifyPassword(pw("pw"), encoded), false, encoded);
    }
  });

  it("parseHash - refuses absurd costs so a crafted file cannot hang the node", async () => {
    const [, , , salt, key] = (await hashPassword("pw")).split("$");
    const sixtyFour = Buffer.alloc(64, 1).toString("base64");
    assert.equal(parseHash(`$scrypt$ln=21,r=8,p=1$${salt}$${key}`), "scrypt cost too high");
    assert.equal(parseHash(`$scrypt$ln=14,r=1000,p=1$${salt}$${key}`), "scrypt cost too high");
    assert.equal(parseHash(`$scrypt$ln=14,r=8,p=1000$${salt}$${key}`), "scrypt cost too high");
    assert.equal(parseHash(`$7$10000001$c2FsdA==$${sixtyFour}`), "$7$ iterations too high");
    assert.equal(typeof parseHash(`$7$10000000$c2FsdA==$${sixtyFour}`), "object");
    // Refused before any work: verifying returns at once rather than deriving a key.
    const jobs = await cryptoJobsDuring(() =>
      verifyPassword(pw("pw"), `$7$999999999$c2FsdA==$${sixtyFour}`),
    );
    assert.equal(jobs.size, 0);
  });
});

describe("mosquitto_passwd compatibility", () => {
  it("verifies a $7$ (PBKDF2-SHA512) file made by mosquitto_passwd and refuses wrong passwords", async () => {
    const path = join(dir, "mosquitto-7");
    await mosquittoPasswd(["-c", "-b", path, "alice", "s3cret pw"]);
    await mosquittoPasswd(["-b", path, "bob", "other"]);
    const file = await PasswordFile.load(path);
    assert.deepEqual(file.usernames(), ["alice", "bob"]);
    assert.equal(await file.verify("alice", pw("s3cret pw")), true);
    assert.equal(await file.verify("bob", pw("other")), true);
    assert.equal(await file.verify("alice", pw("other")), false);
    assert.equal(await file.verify("alice", pw("s3cret p")), false);
    assert.equal(await file.verify("carol", pw("s3cret pw")), false);
  });

  it("verifies a $6$ (salted SHA-512) file made by mosquitto_passwd -H sha512", async () => {
    const path = join(dir, "mosquitto-6");
    await mosquittoPasswd(["-H", "sha512", "-c", "-b", path, "bob", "hunter2"]);
    const file = await PasswordFile.load(path);
    assert.equal(file.size, 1);
    assert.equal(await file.verify("bob", pw("hunter2")), true);
    assert.equal(await file.verify("bob", pw("hunter3")), false);
    assert.equal(await file.verify("bob", pw("")), false);
  });

  it("reads a file mixing $6$, $7$ and scrypt entries", async () => {
    const path = join(dir, "mosquitto-mixed");
    await mosquittoPasswd(["-c", "-b", path, "seven", "p7"]);
    await mosquittoPasswd(["-H", "sha512", "-b", path, "six", "p6"]);
    const text = setUser(await readFile(path, "utf8"), "ours", await hashPassword("ps"));
    const file = await PasswordFile.load(await fileWith(text));
    assert.equal(await file.verify("seven", pw("p7")), true);
    assert.equal(await file.verify("six", pw("p6")), true);
    assert.equal(await file.verify("ours", pw("ps")), true);
    assert.equal(await file.verify("six", pw("p7")), false);
  });
});

describe("PasswordFile", () => {
  it("load - ignores blank lines and comments, accepts CRLF line ends", async () => {
    const a = await hashPassword("pa");
    const b = await hashPassword("pb");
    const file = await PasswordFile.load(
      await fileWith(`# operators\r\n\r\nalice:${a}\r\n  \n#bob:nothing\nbob:${b}\n`),
    );
    assert.equal(file.size, 2);
    assert.deepEqual(file.usernames(), ["alice", "bob"]);
    assert.equal(file.has("alice"), true);
    assert.equal(file.has("#bob"), false);
    assert.equal(file.has("carol"), false);
    assert.equal(await file.verify("alice", pw("pa")), true);
    assert.equal(await file.verify("bob", pw("pb")), true);
    assert.equal(await file.verify("alice", pw("pb")), false);
  });

  it("load - an empty file loads with no users and refuses everyone", async () => {
    const file = await PasswordFile.load(await fileWith("# nobody yet\n"));
    assert.equal(file.size, 0);
    assert.deepEqual(file.usernames(), []);
    assert.equal(await file.verify("alice", pw("anything")), false);
  });

  it("verify - an unknown user is refused after the same key derivation a known user costs", async () => {
    const scryptFile = await PasswordFile.load(await fileWith(`a:${await hashPassword("pa")}\n`));
    const known = await cryptoJobsDuring(() => scryptFile.verify("a", pw("wrong")));
    let answer: boolean | undefined;
    const unknown = await cryptoJobsDuring(async () => {
      answer = await scryptFile.verify("nobody", pw("pa"));
    });
    assert.equal(answer, false);
    assert.deepEqual([...known], [["SCRYPTREQUEST", 1]]);
    assert.deepEqual([...unknown], [["SCRYPTREQUEST", 1]]);

    // The dummy follows the file's algorithm: a Mosquitto 2 file costs a PBKDF2 either way.
    const path = join(dir, "dummy-7");
    await mosquittoPasswd(["-c", "-b", path, "m", "pm"]);
    const pbkdf2File = await PasswordFile.load(path);
    const unknown7 = await cryptoJobsDuring(() => pbkdf2File.verify("nobody", pw("pm")));
    assert.deepEqual([...unknown7], [["PBKDF2REQUEST", 1]]);

    // With no users at all there is still a full scrypt check.
    const empty = await PasswordFile.load(await fileWith(""));
    const unknownEmpty = await cryptoJobsDuring(() => empty.verify("nobody", pw("x")));
    assert.deepEqual([...unknownEmpty], [["SCRYPTREQUEST", 1]]);
  });

  it("load - names the line of each malformed entry, all at once, without the hash", async () => {
    const good = await hashPassword("pw");
    const text = [
      "# header",
      `alice:${good}`,
      "just-a-name",
      `:${good}`,
      "bob:$5$rounds=5000$c2FsdA==$bm90LWEtaGFzaA==",
      "carol:plaintext-password",
      `alice:${good}`,
      "",
    ].join("\n");
    const problems = await loadProblems(text);
    assert.deepEqual(problems, [
      "passwd:3: malformed line (expected username:hash)",
      "passwd:4: malformed line (expected username:hash)",
      "passwd:5: unknown hash format",
      "passwd:6: not a $-prefixed hash",
      "passwd:7: duplicate user",
    ]);
    for (const problem of problems) {
      assert.ok(!problem.includes(good), "a problem line quotes the hash");
      assert.ok(!problem.includes("plaintext-password"), "a problem line quotes the secret");
    }
  });

  it("load - a file with absurd cost parameters is refused at load, naming the line", async () => {
    const [, , , salt, key] = (await hashPassword("pw")).split("$");
    const sixtyFour = Buffer.alloc(64, 7).toString("base64");
    const problems = await loadProblems(
      [
        `greedy:$scrypt$ln=30,r=8,p=1$${salt}$${key}`,
        `slow:$7$2000000000$c2FsdA==$${sixtyFour}`,
      ].join("\n"),
    );
    assert.deepEqual(problems, [
      "passwd:1: scrypt cost too high",
      "passwd:2: $7$ iterations too high",
    ]);
  });

  it("load - an unreadable path is a ConfigError naming the path", async () => {
    const missing = join(dir, "does-not-exist");
    await assert.rejects(PasswordFile.load(missing), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.deepEqual(error.problems, [`${missing}: cannot be read (ENOENT)`]);
      return true;
    });
  });
});

describe("setUser and deleteUser", () => {
  const text = "# managed by ops\nalice:$7$1$a$b\n\n# service accounts\nalice2:$6$c$d\n";

  it("setUser - replaces an existing user in place and keeps comments and blank lines", () => {
    assert.equal(
      setUser(text, "alice", "$scrypt$new"),
      "# managed by ops\nalice:$scrypt$new\n\n# service accounts\nalice2:$6$c$d\n",
    );
  });

  it("setUser - appends a new user and ends the file with a newline", () => {
    assert.equal(setUser(text, "bob", "$scrypt$b"), `${text}bob:$scrypt$b\n`);
    assert.equal(setUser("# no newline", "bob", "$h"), "# no newline\nbob:$h\n");
    assert.equal(setUser("", "bob", "$h"), "bob:$h\n");
  });

  it("deleteUser - removes only that user and keeps comments", () => {
    assert.equal(
      deleteUser(text, "alice"),
      "# managed by ops\n\n# service accounts\nalice2:$6$c$d\n",
    );
    assert.equal(deleteUser("alice:$h\n", "alice"), "");
  });

  it("deleteUser - an absent user is undefined; a comment naming the user is not an entry", () => {
    assert.equal(deleteUser(text, "bob"), undefined);
    assert.equal(deleteUser(text, "ali"), undefined);
    assert.equal(deleteUser("#alice:$h\n", "alice"), undefined);
  });
});
