import { z } from "zod";

/**
 * `sparkplug`: Sparkplug B (Eclipse Sparkplug 3.0) awareness, identity binding and payload
 * validation. Part of the config schema (config/schema.ts embeds it); kept here beside the
 * folder that enforces it (src/sparkplug/).
 */

/** A name or a pattern with `*` standing for any run of characters. */
const glob = z
  .string()
  .min(1, "must not be empty")
  .max(256)
  .regex(/^[^/+#]+$/, "may not contain '/', '+' or '#'");

const bindIdentitySchema = z
  .strictObject({
    from: z
      .enum(["username", "clientId", "certificateCn"])
      .default("username")
      .describe(
        "The identity field the binding reads: `username` (also the certificate CN with `auth.certificateIdentity: cn-is-username`, and the device id of a registry device), `clientId`, or `certificateCn` (the verified client certificate's CN).",
      ),
    pattern: z
      .string()
      .default("{group}.{edge}")
      .refine(
        (text) => text.split("{group}").length === 2 && text.split("{edge}").length === 2,
        "must contain {group} and {edge} once each",
      )
      .refine((text) => !/[/+#]/.test(text), "may not contain '/', '+' or '#'")
      .describe(
        "How the group id and the edge node id are read from that field. An identity named `Plant1.press-7` is edge node `press-7` of group `Plant1` under the default; one that does not match is bound to no edge node. The group is read up to the first separator.",
      )
      .meta({ examples: ["spb-{group}-{edge}"] }),
    hostApplications: z
      .array(glob)
      .max(1_000)
      .default([])
      .describe(
        "Names (in the field `from` reads) of the identities that are Sparkplug Host Applications; `*` matches any run of characters. Only they may publish NCMD, DCMD and STATE, and a host publishes STATE only under its own name as host id (`spBv1.0/STATE/<name>`). Registry devices in the group `sparkplug-host` are host applications too.",
      )
      .meta({ examples: [["scada-primary", "scada-*"]] }),
  })
  .describe(
    "Binds identities to their Sparkplug topics: an edge node publishes only `spBv1.0/<group>/N*/<edge>` and `spBv1.0/<group>/D*/<edge>/<device>` for the group and edge node id its identity names (NCMD and DCMD excepted), or that registry groups `spb:<group>` give a registry device whose id is the edge node id. Checked before the ACL, which must allow the topic too; wills are checked at CONNECT. Refusals are audited (`audit.sparkplug_refused`) and answered with 0x87 to MQTT 5 clients. Absent: off.",
  );

const validatePayloadsSchema = z
  .strictObject({
    groups: z
      .array(glob)
      .min(1)
      .max(1_000)
      .default(["*"])
      .describe(
        "Group ids (or patterns with `*`) whose payloads are checked; the others pass unread.",
      )
      .meta({ examples: [["Plant*", "Line-3"]] }),
  })
  .describe(
    "Decodes every PUBLISH under `spBv1.0/` of the chosen groups as a Sparkplug B payload (Eclipse Tahu's schema) and refuses what does not decode or lacks what the spec requires (a `seq` of 0-255 on births and data, a `bdSeq` metric on NBIRTH and NDEATH, an NBIRTH `bdSeq` equal to that of the connection's NDEATH will); STATE must be JSON `{online, timestamp}`. Refusals are counted, audited and answered with 0x99 to MQTT 5 clients (MQTT 3.1.1 ones: dropped). Absent: off.",
  );

export const sparkplugSchema = z
  .strictObject({
    aware: z
      .boolean()
      .default(false)
      .describe(
        "Sparkplug Aware: the node that receives an NBIRTH or DBIRTH republishes it retained on `$sparkplug/certificates/spBv1.0/<group>/NBIRTH/<edge>` or `.../DBIRTH/<edge>/<device>`, where the cluster's retained store keeps it for late Host Applications. An NBIRTH also clears the edge node's DBIRTH certificates, which its DBIRTHs then replace. Clients may not publish under `$sparkplug/`.",
      ),
    rewriteDeathTimestamp: z
      .boolean()
      .default(false)
      .describe(
        "Sets the timestamp of an NDEATH to the time the node publishes it (tck-id-conformance-mqtt-aware-ndeath-timestamp): a will's NDEATH otherwise carries the time the edge node connected.",
      ),
    bindIdentity: bindIdentitySchema.optional(),
    validatePayloads: validatePayloadsSchema.optional(),
    metricGroups: z
      .number()
      .int()
      .min(1)
      .max(10_000)
      .default(100)
      .describe(
        "Distinct `group` label values the Sparkplug metrics use; groups seen after that many are counted as `_other`, which bounds the series a fleet can create.",
      ),
  })
  .prefault({})
  .describe(
    "Sparkplug B (Eclipse Sparkplug 3.0). Any setting here is optional: Sluice is a Sparkplug Compliant server without them (QoS 0 and 1, wills with retain and QoS 1, retained messages). See docs/sparkplug.md.",
  );

export type SparkplugConfig = z.output<typeof sparkplugSchema>;
