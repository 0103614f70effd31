#!/usr/bin/env node
import { parseArgs } from "node:util";
import { stringify } from "yaml";
import { ADMIN_USAGE, ApiRefusedError, adminToken, runAdminCommand } from "./admin/admin-cli.js";
import { ENV_OVERRIDES } from "./config/load-config.js";
import { redactConfig } from "./config/redact.js";
import { ConfigError, UsageError } from "./errors.js";
import { loadVerifiedConfig } from "./lifecycle/load-verified-config.js";
import { SluiceNode } from "./node.js";
import { createLogger, type Logger } from "./observability/logger.js";
import { CA_USAGE, runCaCommand } from "./pki/ca-command.js";
import { runPasswd } from "./security/passwd-command.js";

const EXIT_OK = 0;
const EXIT_RUNTIME = 1;
const EXIT_CONFIG = 2;
/** A broken list can yield a problem per item; the first ones say what is wrong. */
const MAX_PROBLEMS_SHOWN = 100;

const USAGE = `Usage:
  sluice start [--config FILE]         run a broker node (no file: local-only, in-memory defaults)
  sluice check-config --config FILE    validate a config and print it with secrets redacted
  sluice passwd [-c] [-D] [--scram] FILE USER
                                       add, update (-c: create the file) or delete (-D) a user;
                                       the password is read from stdin or prompted for; --scram
                                       stores a SCRAM-SHA-256 verifier (MQTT 5 AUTH)
  sluice --help | --version

${ADMIN_USAGE}

${CA_USAGE}

Environment: SLUICE_CONFIG (the config file); ${ENV_OVERRIDES.map((o) => o.variable).join(", ")}
  override the file's keys (docs/configuration.md).
Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage.`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "start":
      return start(configOption(rest));
    case "check-config":
      return checkConfigCommand(configOption(rest, true));
    case "passwd":
      return runPasswd(rest, {
        stdin: process.stdin,
        stdout: process.stdout,
        stderr: process.stderr,
      });
    case "admin-token":
      return adminToken(io());
    case "device":
    case "sessions":
    case "enroll":
      return runAdminCommand(command, rest, io());
    case "ca":
      // Against a running cluster's API when one is named; otherwise a local CA folder.
      if (
        (rest[0] === "revoke" || rest[0] === "issue") &&
        (rest.includes("--api") || process.env.SLUICE_ADMIN_URL)
      ) {
        return runAdminCommand(`ca-${rest[0]}`, rest.slice(1), io());
      }
      return runCaCommand(rest, io());
    case "--version":
    case "-v":
      process.stdout.write(`${await version()}\n`);
      return EXIT_OK;
    case "--help":
    case "-h":
    case "help":
      process.stdout.write(`${USAGE}\n`);
      return EXIT_OK;
    case undefined:
      throw new UsageError("a command is required");
    default:
      throw new UsageError(`unknown command: ${command}`);
  }
}

function io() {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env };
}

function configOption(args: string[], required = false): string | undefined {
  let values: { config?: string | undefined };
  try {
    ({ values } = parseArgs({
      args,
      options: { config: { type: "string", short: "c" } },
      strict: true,
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const file = values.config ?? process.env.SLUICE_CONFIG;
  if (required && !file) throw new UsageError("--config FILE is required");
  return file;
}

async function checkConfigCommand(file: string | undefined): Promise<number> {
  const { config, warnings } = await loadVerifiedConfig({ file });
  for (const warning of warnings) process.stderr.write(`warning: ${warning}\n`);
  process.stdout.write(stringify(redactConfig(config)));
  return EXIT_OK;
}

async function start(file: string | undefined): Promise<number> {
  const { config, warnings } = await loadVerifiedConfig({ file });
  const logger = createLogger({
    level: config.log.level,
    format: config.log.format,
    nodeId: config.nodeId,
  });
  for (const warning of warnings) logger.warn({ event: "config.warning" }, warning);
  let started: SluiceNode | undefined;
  installCrashHandlers(logger, () => started?.status ?? "starting");

  const node = await SluiceNode.start(config, logger);
  started = node;
  return new Promise<number>((resolve) => {
    let signalled = false;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (signalled) {
        logger.warn({ event: "shutdown.forced", signal }, `second ${signal}: exiting at once`);
        process.exit(EXIT_RUNTIME);
      }
      signalled = true;
      logger.info(
        { event: "shutdown.started", signal, drainSeconds: config.shutdown.drainSeconds },
        `${signal} received: draining`,
      );
      node.shutdown().then(
        () => resolve(EXIT_OK),
        (error: unknown) => {
          logger.error({ event: "shutdown.failed", err: error }, "shutdown failed");
          resolve(EXIT_RUNTIME);
        },
      );
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
    process.on("SIGHUP", () => {
      logger.info(
        { event: "reload.started", signal: "SIGHUP" },
        "SIGHUP received: reloading security files",
      );
      node
        .reload()
        .catch((error: unknown) =>
          logger.error({ event: "reload.failed", err: error }, "reload failed"),
        );
    });
  });
}

/**
 * An exception that escapes every handler was thrown in the middle of some synchronous work,
 * which stopped half-way: the process state is unknown, so log and exit, and the orchestrator
 * restarts a clean node (clients resume their sessions elsewhere meanwhile).
 *
 * A rejection nobody handled is different: the operation it reports has already failed and
 * finished, no code was cut off half-way, and what is lost is only the report. Seen in
 * practice, it is a Redis command failing during an outage or a shutdown (engine/emitters.ts
 * handles the one known case) - exactly when exiting would hurt most: every client of the
 * node reconnects at once, onto nodes that share the same Redis trouble. So it is logged, as an
 * error with its stack and the node's state for the bug report, and the node keeps serving.
 */
function installCrashHandlers(logger: Logger, nodeState: () => string): void {
  process.on("uncaughtException", (error: unknown) => {
    logger.fatal({ event: "process.uncaught_exception", err: error }, "unexpected error: exiting");
    process.exit(EXIT_RUNTIME);
  });
  process.on("unhandledRejection", (reason: unknown) => {
    logger.error(
      { event: "process.unhandled_rejection", err: reason, nodeState: nodeState() },
      "a failed operation was not handled: logged, the node keeps serving",
    );
  });
}

async function version(): Promise<string> {
  const { readFile } = await import("node:fs/promises");
  const pkg = JSON.parse(
    await readFile(new URL("../../package.json", import.meta.url), "utf8"),
  ) as {
    version: string;
  };
  return pkg.version;
}

function report(error: unknown): number {
  if (error instanceof ConfigError) {
    const shown = error.problems.slice(0, MAX_PROBLEMS_SHOWN);
    const more = error.problems.length - shown.length;
    if (more > 0) shown.push(`... and ${more} more problems`);
    process.stderr.write(`sluice: invalid configuration\n${shown.join("\n")}\n`);
    return EXIT_CONFIG;
  }
  if (error instanceof ApiRefusedError) {
    process.stderr.write(`sluice: the admin API refused: ${error.message}\n`);
    return EXIT_CONFIG;
  }
  if (error instanceof UsageError) {
    process.stderr.write(`sluice: ${error.message}\n\n${USAGE}\n`);
    return EXIT_CONFIG;
  }
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`sluice: ${message}\n`);
  return EXIT_RUNTIME;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Open handles (e.g. a pretty-log worker) must not keep a finished command alive.
    if (code !== EXIT_OK || process.argv[2] !== "check-config")
      setImmediate(() => process.exit(code));
  },
  (error: unknown) => {
    const code = report(error);
    process.exitCode = code;
    setImmediate(() => process.exit(code));
  },
);
