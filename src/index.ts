export { loadConfig } from "./config/load-config.js";
export type { ListenerConfig, SluiceConfig } from "./config/schema.js";
export * from "./errors.js";
export { SluiceNode } from "./node.js";
export { createLogger } from "./observability/logger.js";
