import type { Client } from "aedes";
import { visitFiles } from "../config/file-keys.js";
import { FILE_KEYS, isTlsListener, type SluiceConfig } from "../config/schema.js";
import { closeWithoutWill, registeredClients } from "../engine/aedes-internals.js";
import { asError, problemsOf } from "../errors.js";
import { FileWatcher } from "../lifecycle/file-watcher.js";
import { auditSubject } from "../mqtt/broker-rules.js";
import type { Logger } from "../observability/logger.js";
import { readRevokedSerials } from "../security/crl.js";
import type { Listener } from "../transport/listener.js";
import type { NodeParts } from "./node-parts.js";

/** The files a reload re-reads: password file, ACL and the listeners' TLS material. */
const RELOADED_FILES = /^(auth\.passwordFile|acl\.file|listeners\[\]\.)/;

/** Every file a reload re-reads, for the watcher that triggers one when a file changes. */
export function reloadedFiles(config: SluiceConfig): string[] {
  const keys = FILE_KEYS.filter((key) => RELOADED_FILES.test(key.pattern));
  return visitFiles(config, keys).map((file) => file.path);
}

/** Reloads whenever one of the files a reload re-reads changes. */
export function watchForReload(
  config: SluiceConfig,
  reload: () => Promise<void>,
  log: Logger,
): FileWatcher {
  return new FileWatcher(reloadedFiles(config), () => {
    log.info(
      { event: "reload.started", trigger: "file change" },
      "security files changed: reloading",
    );
    reload().catch((error: unknown) =>
      log.error({ event: "reload.failed", err: asError(error) }, "reload failed"),
    );
  });
}

export interface ReloadDeps extends NodeParts {
  listeners: readonly Listener[];
}

/**
 * Reloads what can change without a restart (SIGHUP, or a watched file changing): the
 * password file, the ACL and every TLS listener's certificate, key, CA and CRL. Whatever fails
 * to load keeps its previous version, with an error in the log. Clients whose password entry
 * is gone, or whose certificate is now revoked, are disconnected; every client's next decision
 * uses the new ACL.
 */
export async function reloadNode(deps: ReloadDeps): Promise<void> {
  await deps.security.reload();
  deps.listeners.forEach((listener, index) => {
    try {
      listener.reloadTls();
    } catch (error) {
      deps.log.child({ module: "node" }).error(
        {
          event: "reload.failed",
          listener: `listeners[${index}]`,
          err: asError(error),
          problems: problemsOf(error),
        },
        "TLS material rejected; the previous one stays in force",
      );
    }
  });
  await revokeRemovedCredentials(deps);
}

async function revokeRemovedCredentials(deps: ReloadDeps): Promise<void> {
  const { broker, contexts, audit } = deps;
  const passwords = deps.security.passwords();
  const revokedSerials = await readAllRevokedSerials(deps);
  const revoked: Array<{ client: Client; reason: string }> = [];
  for (const client of registeredClients(broker)) {
    const identity = contexts.get(client)?.identity;
    if (
      (identity?.method === "password" || identity?.method === "scram") &&
      identity.device === undefined &&
      !passwords?.has(identity.username ?? "")
    ) {
      revoked.push({ client, reason: "password entry removed" });
    } else if (identity?.certificateSerial && revokedSerials.has(identity.certificateSerial)) {
      revoked.push({ client, reason: "certificate revoked" });
    }
  }
  for (const { client, reason } of revoked)
    audit.revoked(auditSubject(contexts.get(client)), reason);
  await Promise.all(revoked.map(({ client }) => closeWithoutWill(client)));
}

/** Serials revoked by the CRLs of all TLS listeners; a CRL that fails to parse is skipped. */
async function readAllRevokedSerials(deps: ReloadDeps): Promise<Set<string>> {
  const serials = new Set<string>();
  for (const listener of deps.config.listeners) {
    if (!isTlsListener(listener) || !listener.crl) continue;
    try {
      for (const serial of await readRevokedSerials(listener.crl)) serials.add(serial);
    } catch (error) {
      deps.log
        .child({ module: "node" })
        .error(
          { event: "reload.failed", file: listener.crl, err: asError(error) },
          "CRL could not be read",
        );
    }
  }
  return serials;
}
