import type { Client, PublishPacket } from "aedes";
import {
  IdentifierRejectedError,
  NotAuthorizedError,
  ProtocolError,
  ServerUnavailableError,
} from "../errors.js";
import type { SluiceMetrics } from "../observability/metrics.js";
import type { Authenticator } from "../security/authenticator.js";
import { isWillOf } from "./aedes-internals.js";
import type { ClientContexts } from "./client-context.js";
import type { BrokerHooks } from "./hook-adapter.js";
import type { PersistentSessions } from "./persistent-sessions.js";
import { invalidTopicFilter, invalidTopicName } from "./topic-rules.js";

const SYS_PREFIX = "$SYS";

function isSysTopic(topic: string): boolean {
  return (
    topic.startsWith(SYS_PREFIX) &&
    (topic.length === SYS_PREFIX.length || topic[SYS_PREFIX.length] === "/")
  );
}

export interface BrokerRulesEvents {
  /** A client's will is about to be published (its connection ended without DISCONNECT). */
  onWillPublished(clientId: string): void;
}

export interface BrokerRulesDeps {
  contexts: ClientContexts;
  authenticator: Authenticator;
  metrics: SluiceMetrics;
  sessions: PersistentSessions;
  events: BrokerRulesEvents;
}

/**
 * The broker's CONNECT, PUBLISH, SUBSCRIBE and delivery decisions: MQTT 3.1.1 rules that aedes
 * leaves out, then authentication, then (in later layers) authorization.
 */
export function createBrokerRules({
  contexts,
  authenticator,
  metrics,
  sessions,
  events,
}: BrokerRulesDeps): BrokerHooks {
  return {
    preConnect(client, packet) {
      const context = contexts.get(client);
      if (!context) throw new ServerUnavailableError("connection has no context");
      // [MQTT-3.1.2-1] the protocol name goes with its level: MQTT is 4, MQIsdp (3.1) is 3.
      // Level 5 and others reach aedes, which answers CONNACK 1 [MQTT-3.1.2-2].
      const { protocolId, protocolVersion } = packet as typeof packet & {
        protocolVersion?: number;
      };
      if (
        (protocolId === "MQTT" && protocolVersion === 3) ||
        (protocolId === "MQIsdp" && protocolVersion !== 3)
      ) {
        throw new ProtocolError(`protocol name ${protocolId} with level ${protocolVersion}`);
      }
      if (packet.will) {
        const reason = invalidTopicName(packet.will.topic ?? "");
        if (reason) throw new ProtocolError(`will: ${reason}`);
      }
      // aedes replaces an empty client id with a generated one before `authenticate`.
      context.emptyClientId = packet.clientId === "";
    },

    async authenticate(client, username, password) {
      const context = contexts.get(client);
      if (!context) throw new ServerUnavailableError("connection has no context");
      if (context.emptyClientId) {
        // [MQTT-3.1.3-8] a zero-length client id needs clean session 1;
        // MQTT 3.1 (protocol level 3) does not allow it at all.
        if (!client.clean)
          throw new IdentifierRejectedError("zero-length client id with clean session 0");
        if (client.version === 3)
          throw new IdentifierRejectedError("zero-length client id on MQTT 3.1");
      }
      context.identity = await authenticator.authenticate({
        clientId: client.id,
        username,
        password,
        peerCertificate: context.connection.peerCertificate,
        remoteAddress: context.connection.remoteAddress,
      });
      context.sessionPresent = sessions.connect(client.id, client.clean);
    },

    authorizePublish(client: Client | null, packet: PublishPacket) {
      // DUP describes one hop; it is never forwarded as the publisher set it [MQTT-3.3.1-3].
      packet.dup = false;
      // Clients never write $SYS: the broker's own cluster signals (takeover, heartbeats)
      // travel there, so a forged one could disconnect any client (aedes issue 597).
      if (isSysTopic(packet.topic))
        throw new NotAuthorizedError(`publish to ${SYS_PREFIX} refused`);
      if (client === null) return;
      metrics.markMessageReceived();
      if (isWillOf(client, packet)) events.onWillPublished(client.id);
    },

    authorizeSubscribe(_client, subscription) {
      const reason = invalidTopicFilter(subscription.topic);
      if (reason) throw new ProtocolError(reason);
      return subscription;
    },

    authorizeForward(_client, packet) {
      metrics.markMessageSent();
      return packet;
    },
  };
}
