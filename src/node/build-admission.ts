import { ConnectAdmission } from "../admission/connect-admission.js";
import { OverloadMonitor } from "../admission/overload-monitor.js";
import type { Backend } from "../backend/backend.js";
import type { SluiceConfig } from "../config/schema.js";
import type { Logger } from "../observability/logger.js";

/** The checks on CONNECT: overload, flapping and per-username quotas (the last two per backend). */
export function buildAdmission(
  config: SluiceConfig,
  backend: Backend,
  log: Logger,
): { admission: ConnectAdmission; overload: OverloadMonitor } {
  const overload = new OverloadMonitor(config.limits.overload, log.child({ module: "admission" }));
  const admission = new ConnectAdmission({
    isOverloaded: () => overload.overloaded,
    flapping: backend.flapping,
    usernames: backend.usernames,
  });
  return { admission, overload };
}
