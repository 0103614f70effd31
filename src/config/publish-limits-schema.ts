import { z } from "zod";

/**
 * `limits.publish`: per-identity publish rate limits (see PublishLimiter). Part of the config
 * schema (config/schema.ts embeds it); kept here beside the code that enforces it. Absent: no
 * publish limit at all.
 *
 * Defaults, applied by the transform below so that `sluice check-config` prints them:
 * - a rate that is not given is not limited (give messagesPerSecond, bytesPerSecond or both);
 * - burstMessages: messagesPerSecond (one second's worth); burstBytes: bytesPerSecond;
 * - disconnectAfterSeconds: 30;
 * - an override inherits every key it does not set from the block above it, except that a
 *   burst follows its own block's rate: an override that raises messagesPerSecond without a
 *   burstMessages gets one second's worth of its new rate.
 */

const positiveInt = z.number().int().positive();

const rates = {
  messagesPerSecond: positiveInt
    .optional()
    .describe(
      "PUBLISH packets per second, per identity (username, or client id without one). Absent: not counted.",
    )
    .meta({ examples: [100] }),
  burstMessages: positiveInt
    .optional()
    .describe(
      "Messages a client that was quiet may send at once, above the rate. Default: one second's worth of `messagesPerSecond`.",
    )
    .meta({ examples: [200] }),
  bytesPerSecond: positiveInt
    .optional()
    .describe(
      "PUBLISH bytes per second as on the wire (fixed header, topic and payload), per identity. Absent: not counted.",
    )
    .meta({ examples: [1_048_576] }),
  burstBytes: positiveInt
    .optional()
    .describe(
      "Bytes a quiet client may send at once. A larger single message is let through when the bucket is full, and the client waits for the debt afterwards. Default: `bytesPerSecond`.",
    )
    .meta({ examples: [2_097_152] }),
  disconnectAfterSeconds: positiveInt
    .optional()
    .describe(
      "A client throttled without a break of a second for this long is disconnected (its will is published). Default: 30.",
    )
    .meta({ examples: [30] }),
};

const overrideSchema = z.strictObject({
  username: z
    .string()
    .min(1)
    .optional()
    .describe("Matches the authenticated username exactly. Give either this or `clientId`.")
    .meta({ examples: ["scada"] }),
  clientId: z
    .string()
    .min(1)
    .optional()
    .describe("Matches the client id; `*` stands for any run of characters.")
    .meta({ examples: ["hmi-*"] }),
  ...rates,
});

export const DEFAULT_DISCONNECT_AFTER_SECONDS = 30;

/** The effective limits of one block (the base or an override), defaults applied. */
export interface PublishRates {
  messagesPerSecond?: number;
  burstMessages?: number;
  bytesPerSecond?: number;
  burstBytes?: number;
  disconnectAfterSeconds: number;
}

export interface PublishOverride extends PublishRates {
  username?: string;
  clientId?: string;
}

export interface PublishLimitsConfig extends PublishRates {
  /** First match wins, in order. */
  overrides: PublishOverride[];
}

type RatesInput = { [K in keyof typeof rates]?: number | undefined };

/** Applies the documented defaults to one block, inheriting from `parent` (the base block). */
export function effectiveRates(block: RatesInput, parent: PublishRates | undefined): PublishRates {
  const messagesPerSecond = block.messagesPerSecond ?? parent?.messagesPerSecond;
  const bytesPerSecond = block.bytesPerSecond ?? parent?.bytesPerSecond;
  const burstMessages =
    block.burstMessages ??
    (block.messagesPerSecond !== undefined ? block.messagesPerSecond : parent?.burstMessages);
  const burstBytes =
    block.burstBytes ??
    (block.bytesPerSecond !== undefined ? block.bytesPerSecond : parent?.burstBytes);
  return {
    ...(messagesPerSecond === undefined
      ? {}
      : { messagesPerSecond, burstMessages: burstMessages ?? messagesPerSecond }),
    ...(bytesPerSecond === undefined
      ? {}
      : { bytesPerSecond, burstBytes: burstBytes ?? bytesPerSecond }),
    disconnectAfterSeconds:
      block.disconnectAfterSeconds ??
      parent?.disconnectAfterSeconds ??
      DEFAULT_DISCONNECT_AFTER_SECONDS,
  };
}

export const publishLimitsSchema = z
  .strictObject({
    ...rates,
    overrides: z
      .array(overrideSchema)
      .default([])
      .describe(
        "Other limits for some clients; the first match wins. An override inherits every key it does not set from the block above it, except that a burst follows its own block's rate.",
      ),
  })
  .superRefine((value, ctx) => {
    const problem = (path: PropertyKey[], message: string) =>
      ctx.addIssue({ code: "custom", path, message });
    if (value.messagesPerSecond === undefined && value.bytesPerSecond === undefined)
      problem([], "give messagesPerSecond, bytesPerSecond or both");
    if (value.burstMessages !== undefined && value.messagesPerSecond === undefined)
      problem(["burstMessages"], "needs messagesPerSecond");
    if (value.burstBytes !== undefined && value.bytesPerSecond === undefined)
      problem(["burstBytes"], "needs bytesPerSecond");
    value.overrides.forEach((override, i) => {
      if ((override.username === undefined) === (override.clientId === undefined))
        problem(["overrides", i], "give either username or clientId");
      if (
        override.burstMessages !== undefined &&
        (override.messagesPerSecond ?? value.messagesPerSecond) === undefined
      )
        problem(["overrides", i, "burstMessages"], "needs messagesPerSecond");
      if (
        override.burstBytes !== undefined &&
        (override.bytesPerSecond ?? value.bytesPerSecond) === undefined
      )
        problem(["overrides", i, "burstBytes"], "needs bytesPerSecond");
    });
  })
  .transform((value): PublishLimitsConfig => {
    const base = effectiveRates(value, undefined);
    return {
      ...base,
      overrides: value.overrides.map(({ username, clientId, ...block }) => ({
        ...(username === undefined ? {} : { username }),
        ...(clientId === undefined ? {} : { clientId }),
        ...effectiveRates(block, base),
      })),
    };
  });
