import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { runPasswd } from "../../src/security/passwd-command.js";
import { PasswordFile } from "../../src/security/password-file.js";
import { deriveScramCredential } from "../../src/security/scram.js";

const run = promisify(execFile);

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-passwd-cmd-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

let caseCount = 0;
/** A fresh folder per case, so leftover temp files can be asserted absent. */
async function freshDir(): Promise<string> {
  caseCount += 1;
  return mkdtemp(join(dir, `case-${caseCount}-`));
}

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** Collects what is written to a stream. */
function sink(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on("data", (chunk: Buffer) => chunks.push(chunk));
  return { stream, text: () => Buffer.concat(chunks).toString("utf8") };
}

/** Runs the command with `input` piped on stdin (not a terminal). */
async function passwd(args: string[], input = ""): Promise<Outcome> {
  const stdout = sink();
  const stderr = sink();
  const code = await runPasswd(args, {
    stdin: Readable.from([Buffer.from(input, "utf8")]),
    stdout: stdout.stream,
    stderr: stderr.stream,
  });
  return { code, stdout: stdout.text(), stderr: stderr.text() };
}

/** Runs the command on a fake terminal that types each of `typed` after a prompt appears. */
async function passwdOnTerminal(
  args: string[],
  typed: string[],
): Promise<Outcome & { rawModes: boolean[] }> {
  const rawModes: boolean[] = [];
  const stdin = Object.assign(new PassThrough(), {
    isTTY: true,
    setRawMode(raw: boolean) {
      rawModes.push(raw);
    },
  });
  const stdout = sink();
  const stderr = sink();
  const answers = [...typed];
  stdout.stream.on("data", (chunk: Buffer) => {
    if (/password: $/i.test(chunk.toString("utf8"))) {
      const answer = answers.shift();
      if (answer !== undefined) setImmediate(() => stdin.write(answer));
    }
  });
  const code = await runPasswd(args, { stdin, stdout: stdout.stream, stderr: stderr.stream });
  return { code, stdout: stdout.text(), stderr: stderr.text(), rawModes };
}

async function verifies(path: string, username: string, password: string): Promise<boolean> {
  const file = await PasswordFile.load(path);
  return file.verify(username, Buffer.from(password, "utf8"));
}

async function modeOf(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}

describe("sluice passwd", () => {
  it("-c creates a 0600 file holding a verifiable hash and never the plaintext", async () => {
    const folder = await freshDir();
    const path = join(folder, "passwd");
    const result = await passwd(["-c", path, "alice"], "Tr0ub4dor&3\r\n");
    assert.deepEqual(result, { code: 0, stdout: "", stderr: "" });
    const text = await readFile(path, "utf8");
    assert.match(text, /^alice:\$scrypt\$ln=14,r=8,p=1\$[^$]+\$[^$]+\n$/);
    assert.ok(!text.includes("Tr0ub4dor"), "the file holds the plaintext");
    assert.equal(await modeOf(path), 0o600);
    assert.equal(await verifies(path, "alice", "Tr0ub4dor&3"), true);
    assert.equal(await verifies(path, "alice", "Tr0ub4dor&3\r"), false);
    assert.deepEqual(await readdir(folder), ["passwd"], "a temp file was left behind");
  });

  it("--scram writes a SCRAM-SHA-256 verifier that also verifies the plain password", async () => {
    const path = join(await freshDir(), "passwd");
    assert.equal((await passwd(["-c", "--scram", path, "plc-1"], "pencil\n")).code, 0);
    const text = await readFile(path, "utf8");
    assert.match(text, /^plc-1:SCRAM-SHA-256\$4096:[^$]+\$[^:]+:[^:]+\n$/);
    assert.equal(await verifies(path, "plc-1", "pencil"), true);
    assert.equal(await verifies(path, "plc-1", "pencil2"), false);
    const file = await PasswordFile.load(path);
    assert.equal(file.scramCredential("plc-1")?.iterations, 4096);
    assert.equal(file.scramCredential("nobody"), undefined);
  });

  it("--scram SASLprep's the password: soft hyphen and NFKC as a SCRAM client sends them", async () => {
    const path = join(await freshDir(), "passwd");
    assert.equal((await passwd(["-c", "--scram", path, "plc-1"], "I\u00ADX\n")).code, 0);
    const credential = (await PasswordFile.load(path)).scramCredential("plc-1");
    assert.ok(credential !== undefined);
    const salted = await deriveScramCredential(Buffer.from("IX"), credential.salt, 4096);
    assert.deepEqual(salted.storedKey, credential.storedKey, "stored as the prepared 'IX'");
    assert.equal(await verifies(path, "plc-1", "\u2168"), true);
  });

  it("--scram refuses a password or user name SASLprep refuses, saying why (exit 2)", async () => {
    const path = join(await freshDir(), "passwd");
    const control = await passwd(["-c", "--scram", path, "plc-1"], "pen\u0007cil\n");
    assert.equal(control.code, 2);
    assert.match(control.stderr, /password contains U\+0007.*choose another password/);
    const name = await passwd(["-c", "--scram", path, "plc\u00AD1"], "pencil\n");
    assert.equal(name.code, 2);
    assert.match(
      name.stderr,
      /not in SASLprep \(RFC 4013\) form: a SCRAM client sends it as "plc1"/,
    );
    await assert.rejects(readFile(path), { code: "ENOENT" });
    // Without --scram nothing is prepared: scrypt hashes the bytes given.
    assert.equal((await passwd(["-c", path, "plc\u00AD1"], "pen\u0007cil\n")).code, 0);
  });

  it("reads only the first line of stdin as the password", async () => {
    const path = join(await freshDir(), "passwd");
    assert.equal((await passwd(["-c", path, "alice"], "first\nsecond\n")).code, 0);
    assert.equal(await verifies(path, "alice", "first"), true);
    assert.equal(await verifies(path, "alice", "first\nsecond"), false);
  });

  it("adds and updates users, keeping comments and other users, and keeps mode 0600", async () => {
    const path = join(await freshDir(), "passwd");
    await writeFile(path, "# operators\n", { mode: 0o644 });
    assert.equal((await passwd([path, "alice"], "a1\n")).code, 0);
    assert.equal((await passwd([path, "bob"], "b1\n")).code, 0);
    assert.equal((await passwd([path, "alice"], "a2\n")).code, 0);
    const text = await readFile(path, "utf8");
    assert.match(text, /^# operators\nalice:\$scrypt\$[^\n]+\nbob:\$scrypt\$[^\n]+\n$/);
    assert.equal(await modeOf(path), 0o600);
    assert.equal(await verifies(path, "alice", "a2"), true);
    assert.equal(await verifies(path, "alice", "a1"), false);
    assert.equal(await verifies(path, "bob", "b1"), true);
  });

  it("-c overwrites an existing file", async () => {
    const path = join(await freshDir(), "passwd");
    await passwd(["-c", path, "alice"], "a\n");
    assert.equal((await passwd(["-c", path, "bob"], "b\n")).code, 0);
    assert.deepEqual((await PasswordFile.load(path)).usernames(), ["bob"]);
  });

  it("-D removes the user and keeps the rest; an absent user exits 2", async () => {
    const path = join(await freshDir(), "passwd");
    await writeFile(path, "# keep me\n");
    await passwd([path, "alice"], "a\n");
    await passwd([path, "bob"], "b\n");
    const removed = await passwd(["-D", path, "alice"]);
    assert.deepEqual(removed, { code: 0, stdout: "", stderr: "" });
    const text = await readFile(path, "utf8");
    assert.match(text, /^# keep me\nbob:/);
    assert.deepEqual((await PasswordFile.load(path)).usernames(), ["bob"]);
    assert.equal(await modeOf(path), 0o600);

    const absent = await passwd(["-D", path, "alice"]);
    assert.equal(absent.code, 2);
    assert.equal(absent.stderr, `sluice passwd: user alice is not in ${path}\n`);
    assert.equal(await readFile(path, "utf8"), text);
  });

  it("updates a file made by mosquitto_passwd, which still verifies its own entries", async () => {
    const path = join(await freshDir(), "passwd");
    try {
      await run("mosquitto_passwd", ["-c", "-b", path, "legacy", "old-pw"]);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") {
        assert.fail(
          "mosquitto_passwd is not installed (apt-get install mosquitto); CI installs it",
        );
      }
      throw error;
    }
    assert.equal((await passwd([path, "fresh"], "new-pw\n")).code, 0);
    assert.equal(await verifies(path, "legacy", "old-pw"), true);
    assert.equal(await verifies(path, "fresh", "new-pw"), true);
    assert.equal((await passwd(["-D", path, "legacy"])).code, 0);
    assert.deepEqual((await PasswordFile.load(path)).usernames(), ["fresh"]);
  });

  it("prompts twice without echo on a terminal, in raw mode", async () => {
    const path = join(await freshDir(), "passwd");
    const result = await passwdOnTerminal(["-c", path, "alice"], ["s3cret\r", "s3cret\r"]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, "Password: \nReenter password: \n");
    assert.ok(!result.stdout.includes("s3cret"), "the password was echoed");
    assert.deepEqual(result.rawModes, [true, false, true, false]);
    assert.equal(await verifies(path, "alice", "s3cret"), true);
  });

  it("refuses two different passwords on a terminal with exit 2 and writes nothing", async () => {
    const path = join(await freshDir(), "passwd");
    const result = await passwdOnTerminal(["-c", path, "alice"], ["one\r", "two\r"]);
    assert.equal(result.code, 2);
    assert.equal(result.stderr, "sluice passwd: the passwords do not match\n");
    await assert.rejects(stat(path), { code: "ENOENT" });
  });

  it("refuses an empty password with exit 2", async () => {
    const path = join(await freshDir(), "passwd");
    for (const input of ["", "\n", "\r\n"]) {
      const result = await passwd(["-c", path, "alice"], input);
      assert.equal(result.code, 2, JSON.stringify(input));
      assert.equal(result.stderr, "sluice passwd: an empty password is not allowed\n");
    }
    await assert.rejects(stat(path), { code: "ENOENT" });
  });

  it("refuses bad usage with exit 2 and a message on stderr", async () => {
    const path = join(await freshDir(), "passwd");
    for (const args of [
      [],
      [path],
      [path, "a", "b"],
      ["-x", path, "a"],
      ["-c", "-D", path, "a"],
      ["--scram", "-D", path, "a"],
    ]) {
      const result = await passwd(args, "pw\n");
      assert.equal(result.code, 2, args.join(" "));
      assert.match(result.stderr, /^sluice passwd: .+\n/, args.join(" "));
      assert.ok(result.stderr.endsWith("usage: sluice passwd [-c] [-D] [--scram] FILE USERNAME\n"));
    }
    await assert.rejects(stat(path), { code: "ENOENT" });
  });

  it("refuses an invalid username with exit 2 and one line on stderr", async () => {
    const path = join(await freshDir(), "passwd");
    for (const username of [
      "",
      "a:b",
      "a b",
      "a\tb",
      "a\nb",
      "a\u0000b",
      "a\u007fb",
      "é".repeat(129),
    ]) {
      const result = await passwd(["-c", path, username], "pw\n");
      assert.equal(result.code, 2, JSON.stringify(username));
      assert.match(result.stderr, /^sluice passwd: [^\n]+\n$/);
    }
    // 256 bytes is the limit, not past it.
    assert.equal((await passwd(["-c", path, "u".repeat(256)], "pw\n")).code, 0);
  });

  it("refuses to add to a file that does not exist without -c, with exit 2", async () => {
    const path = join(await freshDir(), "missing");
    const result = await passwd([path, "alice"], "pw\n");
    assert.equal(result.code, 2);
    assert.equal(
      result.stderr,
      `sluice passwd: cannot read ${path} (ENOENT); use -c to create it\n`,
    );
    await assert.rejects(stat(path), { code: "ENOENT" });
  });

  it("exits 1 when the file cannot be written", async () => {
    const path = join(dir, "no-such-folder", "passwd");
    const result = await passwd(["-c", path, "alice"], "pw\n");
    assert.equal(result.code, 1);
    assert.equal(result.stderr, `sluice passwd: cannot write ${path} (ENOENT)\n`);
    assert.ok(!result.stderr.includes("pw\n"));
  });

  it("refuses a username starting with # (the file would read it as a comment)", async () => {
    const path = join(await freshDir(), "passwd");
    const result = await passwd(["-c", path, "#admin"], "pw\n");
    assert.equal(result.code, 2);
  });
});
