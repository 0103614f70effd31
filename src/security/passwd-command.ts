import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { replaceFile } from "../files/replace-file.js";
import { deleteUser, setUser } from "./password-file.js";
import { hashPassword, hashPasswordScram } from "./password-hash.js";
import { SaslprepError, saslprepName } from "./saslprep.js";

export interface PasswdIo {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

const USAGE = "usage: sluice passwd [-c] [-D] [--scram] FILE USERNAME";

/**
 * `sluice passwd [-c] [-D] [--scram] FILE USERNAME`: adds or updates a user with a salted scrypt
 * hash, or with --scram a SCRAM-SHA-256 verifier (for MQTT 5 enhanced authentication; it also
 * verifies plain passwords) (password from stdin, or prompted twice on a terminal), creates the file with -c, deletes
 * the user with -D. The file is replaced atomically with mode 0600; the plaintext is never
 * written anywhere. Exit codes: 0 ok, 2 usage or validation error, 1 I/O failure.
 */
export async function runPasswd(args: string[], io: PasswdIo): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(args);
  } catch (error) {
    io.stderr.write(`sluice passwd: ${(error as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const { file, username, create, remove, scram } = parsed;
  const problem = invalidUsername(username) ?? (scram ? unpreparedName(username) : undefined);
  if (problem) {
    io.stderr.write(`sluice passwd: ${problem}\n`);
    return 2;
  }

  let text = "";
  if (!create) {
    try {
      text = await readFile(file, "utf8");
    } catch (error) {
      io.stderr.write(
        `sluice passwd: cannot read ${file} (${(error as NodeJS.ErrnoException).code}); use -c to create it\n`,
      );
      return 2;
    }
  }

  if (remove) {
    const updated = deleteUser(text, username);
    if (updated === undefined) {
      io.stderr.write(`sluice passwd: user ${username} is not in ${file}\n`);
      return 2;
    }
    return (await writeAtomically(file, updated, io)) ? 0 : 1;
  }

  const password = await readPassword(io);
  if (password === undefined) {
    io.stderr.write("sluice passwd: the passwords do not match\n");
    return 2;
  }
  if (password.length === 0) {
    io.stderr.write("sluice passwd: an empty password is not allowed\n");
    return 2;
  }
  let hash: string;
  try {
    hash = scram ? await hashPasswordScram(password) : await hashPassword(password);
  } catch (error) {
    if (!(error instanceof SaslprepError)) throw error;
    io.stderr.write(`sluice passwd: ${error.message}; choose another password\n`);
    return 2;
  } finally {
    password.fill(0);
  }
  return (await writeAtomically(file, setUser(text, username, hash), io)) ? 0 : 1;
}

function parse(args: string[]): {
  file: string;
  username: string;
  create: boolean;
  remove: boolean;
  scram: boolean;
} {
  const { values, positionals } = parseArgs({
    args,
    options: {
      create: { type: "boolean", short: "c" },
      delete: { type: "boolean", short: "D" },
      scram: { type: "boolean" },
    },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 2) throw new Error("FILE and USERNAME are required");
  if (values.create && values.delete) throw new Error("-c and -D cannot be combined");
  if (values.scram && values.delete) throw new Error("--scram and -D cannot be combined");
  return {
    file: positionals[0] as string,
    username: positionals[1] as string,
    create: values.create === true,
    remove: values.delete === true,
    scram: values.scram === true,
  };
}

function invalidUsername(username: string): string | undefined {
  if (username === "") return "the username must not be empty";
  // A line starting with # is a comment in the file: such a user could never log in.
  if (username.startsWith("#")) return "the username must not start with '#'";
  if (Buffer.byteLength(username) > 256) return "the username is longer than 256 bytes";
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it rejects
  if (/[:\s\u0000-\u001f\u007f]/.test(username))
    return "the username must not contain ':', spaces or control characters";
  return undefined;
}

/**
 * A SCRAM client sends its user name SASLprepped and the server looks it up so (RFC 5802
 * §5.1): a name SASLprep would change could never be found.
 */
function unpreparedName(username: string): string | undefined {
  let prepared: string;
  try {
    prepared = saslprepName(username);
  } catch (error) {
    return (error as Error).message;
  }
  return prepared === username
    ? undefined
    : `the user name is not in SASLprep (RFC 4013) form: a SCRAM client sends it as "${prepared}"`;
}

/** Reads the password: the first line of stdin, or twice without echo on a terminal. */
async function readPassword(io: PasswdIo): Promise<Buffer | undefined> {
  if (!io.stdin.isTTY) {
    const line = await firstLine(io.stdin);
    return Buffer.from(line, "utf8");
  }
  const first = await prompt(io, "Password: ");
  const second = await prompt(io, "Reenter password: ");
  return first === second ? Buffer.from(first, "utf8") : undefined;
}

async function firstLine(stream: NodeJS.ReadableStream): Promise<string> {
  const lines = createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY });
  for await (const line of lines) {
    lines.close();
    return line;
  }
  return "";
}

function prompt(io: PasswdIo, question: string): Promise<string> {
  io.stdout.write(question);
  io.stdin.setRawMode?.(true);
  return new Promise((resolve) => {
    let typed = "";
    const onData = (chunk: Buffer | string): void => {
      for (const char of chunk.toString("utf8")) {
        if (char === "\r" || char === "\n" || char === "\u0004") {
          io.stdin.off("data", onData);
          io.stdin.setRawMode?.(false);
          io.stdin.pause();
          io.stdout.write("\n");
          resolve(typed);
          return;
        }
        if (char === "\u0003") process.exit(130);
        typed = char === "\u007f" ? typed.slice(0, -1) : typed + char;
      }
    };
    io.stdin.on("data", onData);
    io.stdin.resume();
  });
}

/** Replaces the file atomically (mode 0600); says why on stderr when it cannot. */
async function writeAtomically(file: string, text: string, io: PasswdIo): Promise<boolean> {
  try {
    await replaceFile(file, text, 0o600);
    return true;
  } catch (error) {
    io.stderr.write(
      `sluice passwd: cannot write ${file} (${(error as NodeJS.ErrnoException).code ?? error})\n`,
    );
    return false;
  }
}
