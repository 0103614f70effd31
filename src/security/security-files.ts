import { asError, problemsOf } from "../errors.js";
import type { Logger } from "../observability/logger.js";
import { Acl } from "./acl.js";
import type { PasswordVerifier } from "./authenticator.js";
import { type Authorizer, OpenAuthorizer } from "./authorizer.js";
import { PasswordFile } from "./password-file.js";

export interface SecurityFilePaths {
  passwordFile?: string | undefined;
  aclFile?: string | undefined;
}

/**
 * The password file and ACL a node enforces, swappable at run time: a reload that fails keeps
 * the previous version in force, so a typo in a file never opens or closes the whole broker.
 */
export class SecurityFiles {
  private constructor(
    private readonly paths: SecurityFilePaths,
    private passwordFile: PasswordFile | undefined,
    private acl: Acl | undefined,
    private readonly log: Logger,
  ) {}

  /** Loads both files; a bad file at start is a ConfigError (the node does not start). */
  static async load(paths: SecurityFilePaths, log: Logger): Promise<SecurityFiles> {
    const [passwords, acl] = await Promise.all([
      paths.passwordFile === undefined ? undefined : PasswordFile.load(paths.passwordFile),
      paths.aclFile === undefined ? undefined : Acl.load(paths.aclFile),
    ]);
    const files = new SecurityFiles(paths, passwords, acl, log);
    if (!acl) {
      log.warn(
        { event: "acl.none" },
        "no acl configured: every authenticated client may publish and subscribe anywhere except $SYS",
      );
    }
    return files;
  }

  passwords(): PasswordVerifier | undefined {
    return this.passwordFile;
  }

  authorizer(): Authorizer {
    return this.acl ?? OPEN;
  }

  /** Re-reads both files; each one that fails to load keeps its previous version. */
  async reload(): Promise<void> {
    const { passwordFile, aclFile } = this.paths;
    if (passwordFile !== undefined) {
      try {
        this.passwordFile = await PasswordFile.load(passwordFile);
        this.log.info(
          { event: "reload.passwords", users: this.passwordFile.size },
          "password file reloaded",
        );
      } catch (error) {
        this.log.error(
          {
            event: "reload.failed",
            file: passwordFile,
            err: asError(error),
            problems: problemsOf(error),
          },
          "password file rejected; the previous one stays in force",
        );
      }
    }
    if (aclFile !== undefined) {
      try {
        this.acl = await Acl.load(aclFile);
        this.log.info({ event: "reload.acl", rules: this.acl.ruleCount }, "ACL reloaded");
      } catch (error) {
        this.log.error(
          {
            event: "reload.failed",
            file: aclFile,
            err: asError(error),
            problems: problemsOf(error),
          },
          "ACL rejected; the previous one stays in force",
        );
      }
    }
  }
}

const OPEN = new OpenAuthorizer();
