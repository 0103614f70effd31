import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { ConfigError } from "../../src/errors.js";
import { runPasswd } from "../../src/security/passwd-command.js";
import { deleteUser, PasswordFile, setUser } from "../../src/security/password-file.js";
import { hashPassword, parseHash, verifyPassword } from "../../src/security/password-hash.js";

const run = promisify(execFile);
let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-passwords-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const pw = (text: string) => Buffer.from(text, "utf8");

describe("password hashes", () => {
  it("Sluice writes a salted scrypt hash that verifies only the right password", async () => {
    const hash = await hashPassword("correct horse");
    assert.match(hash, /^\$scrypt\$ln=14,r=8,p=1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    assert.notEqual(hash, await hashPassword("correct horse"), "salted: two hashes differ");
    assert.equal(await verifyPassword(pw("correct horse"), hash), true);
    assert.equal(await verifyPassword(pw("correct horsf"), hash), false);
  });

  it("verifies files made by mosquitto_passwd ($7$ PBKDF2 and $6$ SHA-512)", async () => {
    const file = join(dir, "mosquitto.passwd");
    try {
      await run("mosquitto_passwd", ["-c", "-b", file, "plc-7", "s3cret-7"]);
      await run("mosquitto_passwd", ["-H", "sha512", "-b", file, "plc-6", "s3cret-6"]);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") {
        assert.fail("mosquitto_passwd is not installed (apt-get install mosquitto; .ci/run does)");
      }
      throw error;
    }
    const text = await readFile(file, "utf8");
    assert.match(text, /^plc-7:\$7\$/m);
    assert.match(text, /^plc-6:\$6\$/m);
    const passwords = await PasswordFile.load(file);
    assert.equal(await passwords.verify("plc-7", pw("s3cret-7")), true);
    assert.equal(await passwords.verify("plc-6", pw("s3cret-6")), true);
    assert.equal(await passwords.verify("plc-7", pw("s3cret-6")), false);
    assert.equal(await passwords.verify("plc-6", pw("wrong")), false);
  });

  it("an unknown user never verifies", async () => {
    const passwords = await PasswordFile.parse(`known:${await hashPassword("x")}\n`, "passwd");
    assert.equal(await passwords.verify("unknown", pw("x")), false);
    assert.equal(passwords.has("unknown"), false);
  });

  it("refuses hashes whose cost would stall the node", () => {
    assert.equal(
      typeof parseHash("$scrypt$ln=30,r=8,p=1$c2FsdA==$a2V5a2V5a2V5a2V5a2V5a2V5a2V5"),
      "string",
    );
    assert.equal(
      typeof parseHash(`$7$999999999$c2FsdA==$${Buffer.alloc(64).toString("base64")}`),
      "string",
    );
  });
});

describe("password files", () => {
  it("reports malformed lines by line number, without their content", async () => {
    await assert.rejects(
      PasswordFile.parse("# comment\ngood:$6$nope\nno-colon-here\nx:$9$what\n", "passwd"),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.deepEqual(error.problems, [
          "passwd:2: malformed $6$ hash",
          "passwd:3: malformed line (expected username:hash)",
          "passwd:4: unknown hash format",
        ]);
        return true;
      },
    );
  });

  it("refuses a duplicate user", async () => {
    const hash = await hashPassword("x");
    await assert.rejects(
      PasswordFile.parse(`a:${hash}\na:${hash}\n`, "passwd"),
      /duplicate user|invalid/,
    );
  });

  it("setUser and deleteUser keep comments and other users", () => {
    const text = "# plant A\nalice:$6$x$y\nbob:$6$x$z\n";
    assert.equal(setUser(text, "alice", "NEW"), "# plant A\nalice:NEW\nbob:$6$x$z\n");
    assert.equal(setUser(text, "carol", "H"), "# plant A\nalice:$6$x$y\nbob:$6$x$z\ncarol:H\n");
    assert.equal(deleteUser(text, "alice"), "# plant A\nbob:$6$x$z\n");
    assert.equal(deleteUser(text, "nobody"), undefined);
  });
});

describe("sluice passwd", () => {
  const io = (input: string) => {
    const stderr = new PassThrough();
    let errors = "";
    stderr.on("data", (chunk: Buffer) => {
      errors += chunk.toString();
    });
    return {
      stdin: Readable.from([input]),
      stdout: new PassThrough(),
      stderr,
      errors: () => errors,
    };
  };

  it("-c creates a 0600 file holding a hash, never the plaintext", async () => {
    const file = join(dir, "created.passwd");
    assert.equal(await runPasswd(["-c", file, "pump-1"], io("Plaintext-Never-Stored\n")), 0);
    const text = await readFile(file, "utf8");
    assert.doesNotMatch(text, /Plaintext-Never-Stored/);
    assert.match(text, /^pump-1:\$scrypt\$/);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const passwords = await PasswordFile.load(file);
    assert.equal(await passwords.verify("pump-1", pw("Plaintext-Never-Stored")), true);
  });

  it("adds and updates users in an existing file, and -D deletes one", async () => {
    const file = join(dir, "edited.passwd");
    await writeFile(file, "# operators\n");
    assert.equal(await runPasswd([file, "a"], io("one\n")), 0);
    assert.equal(await runPasswd([file, "b"], io("two\n")), 0);
    assert.equal(await runPasswd([file, "a"], io("three\n")), 0);
    let passwords = await PasswordFile.load(file);
    assert.equal(await passwords.verify("a", pw("three")), true);
    assert.equal(await passwords.verify("b", pw("two")), true);
    assert.equal(await runPasswd(["-D", file, "a"], io("")), 0);
    passwords = await PasswordFile.load(file);
    assert.deepEqual(passwords.usernames(), ["b"]);
    assert.match(await readFile(file, "utf8"), /^# operators$/m);
  });

  it("usage errors exit 2 with a clear line", async () => {
    const missing = io("x\n");
    assert.equal(await runPasswd([join(dir, "absent.passwd"), "u"], missing), 2);
    assert.match(missing.errors(), /use -c to create it/);
    const badName = io("x\n");
    assert.equal(await runPasswd(["-c", join(dir, "n.passwd"), "bad:name"], badName), 2);
    assert.match(badName.errors(), /must not contain ':'/);
    const empty = io("\n");
    assert.equal(await runPasswd(["-c", join(dir, "e.passwd"), "u"], empty), 2);
    assert.match(empty.errors(), /empty password/);
    const noArgs = io("");
    assert.equal(await runPasswd([], noArgs), 2);
    const unknownUser = io("");
    await writeFile(join(dir, "d.passwd"), "");
    assert.equal(await runPasswd(["-D", join(dir, "d.passwd"), "ghost"], unknownUser), 2);
  });
});
