import type { Aedes, Client, ConnectPacket, PublishPacket } from "aedes";
import type { Logger } from "../observability/logger.js";
import { dropWillDelay, isEphemeralSession, sessionExpiryOf } from "./aedes-internals.js";
import { UnforwardedError } from "./local-first.js";
import type { StoredPacket } from "./persistence-types.js";

/** The timer methods of aedes 2's broker that Sluice replaces (aedes.js). */
interface TimerMethods {
  closed: boolean;
  scheduleSessionExpiry(client: Client): void;
  clearSessionExpiry(clientId: string): void;
  scheduleWill(client: Client, will: PublishPacket, delaySeconds: number): void;
  clearDelayedWill(clientId: string): void;
  _wipeSession(client: Client): void;
  publishWill(client: Client, will: PublishPacket): void;
  preConnect(client: Client, packet: ConnectPacket, done: (...args: unknown[]) => void): void;
}

/** What the timers do when they fall due, on the engine's side. */
export interface SessionTimerActions {
  /**
   * Publishes the wills stored for the client (each once cluster-wide) and deletes them;
   * resolves false while one is left that another node (or this one, later) is publishing.
   */
  publishWills(clientId: string): Promise<boolean>;
  /** Removes everything the persistence holds for the client's session. */
  wipe(clientId: string): Promise<void>;
}

/** A connection of an MQTT 5 session that ended on this node. */
export interface Departure {
  clientId: string;
  /** The epoch its CONNECT claimed the client id with. */
  epoch: number;
  /** Its Session Expiry Interval (s) at the end; undefined leaves the session's timer alone. */
  sessionSeconds: number | undefined;
  /** Its will's delay (s), when a delayed will waits. */
  willDelaySeconds: number | undefined;
}

/** What became of a departure. */
export type DepartureOutcome = "superseded" | "scheduled" | "ended";

/**
 * What became of a dead node's delayed will: scheduled; void (its client is connected again);
 * left alone (its node holds its lease: alive, only cut off from the others' pub/sub).
 */
export type DeferredWill = "scheduled" | "void" | "alive";

/** Timers kept outside this node (in Redis: cluster/session-timers.ts). */
export interface TimerStore {
  /** Starts firing timers that fall due, with these actions. */
  start(actions: SessionTimerActions): Promise<void>;
  /** Starts a departed connection's timers, unless a newer connection took its session over. */
  depart(departure: Departure): Promise<DepartureOutcome>;
  /** Schedules a dead node's delayed will, unless its client is back or its node lives. */
  deferDeadNodeWill(
    brokerId: string,
    clientId: string,
    delaySeconds: number,
  ): Promise<DeferredWill>;
}

/** What the cluster's timers need of the persistence (RedisPersistence). */
export interface TimerPersistence {
  willsOf(clientId: string): Promise<Array<[brokerId: string, will: StoredPacket]>>;
  delWill(client: { id: string; brokerId?: string }): Promise<unknown>;
  unindexWill(brokerId: string, clientId: string): Promise<void>;
  wipeSession(clientId: string, options?: { keepWills?: boolean }): Promise<void>;
}

export interface ClusterTimerDeps {
  timers: TimerStore;
  persistence: TimerPersistence;
  willClaims: {
    claim(brokerId: string, clientId: string): Promise<boolean>;
    release(brokerId: string, clientId: string): Promise<void>;
  };
  /** The epoch the client's CONNECT claimed its id with. */
  epochOf(client: Client): number | undefined;
  /**
   * What the publish hook does to a will as it goes out (Sparkplug's NDEATH timestamp): a
   * delayed will fired here was authorized at its CONNECT and is published without the hook.
   */
  prepareWill?(will: PublishPacket): void;
  onWillPublished(clientId: string): void;
  log: Logger;
}

/** The dead-node will deferral broker-rules asks for (BrokerRulesDeps.delayedWills). */
export interface DelayedWills {
  defer(brokerId: string, clientId: string, delaySeconds: number): Promise<boolean>;
}

const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 5_000;

/** Runs `attempt` until it resolves (after 0.5 s, doubling to 5 s), while the broker is open. */
function retryUntilDone(broker: Aedes, attempt: () => Promise<void>, tries = 0): void {
  const timer = setTimeout(
    () => {
      if ((broker as unknown as TimerMethods).closed) return;
      attempt().catch(() => retryUntilDone(broker, attempt, tries + 1));
    },
    Math.min(FIRST_RETRY_MS * 2 ** tries, MAX_RETRY_MS),
  );
  timer.unref();
}

/** Every will aedes publishes for a client goes out without its Will Delay Interval. */
function publishWillsWithoutDelay(methods: TimerMethods, broker: Aedes): void {
  const publishWill = methods.publishWill.bind(broker);
  methods.publishWill = (client, will) => {
    dropWillDelay(will);
    publishWill(client, will);
  };
}

/**
 * A session of Session Expiry Interval 0 ends with its connection (no DISCONNECT may raise it
 * [MQTT-3.14.2-2]), and its will goes out then, whatever its delay [MQTT-3.1.3-9]. The delay is
 * dropped at CONNECT, so that the stored will says so too: survivors publishing a dead node's
 * wills read no session there (a Clean Start one leaves no expiry in Redis) and would wait out
 * the delay.
 */
function boundWillDelayBySession(methods: TimerMethods, broker: Aedes): void {
  const preConnect = methods.preConnect.bind(broker);
  methods.preConnect = (client, packet, done) => {
    const v5 = packet as ConnectPacket & { protocolVersion?: number };
    if (v5.protocolVersion === 5 && v5.will && !v5.properties?.sessionExpiryInterval) {
      dropWillDelay(v5.will);
    }
    preConnect(client, packet, done);
  };
}

/**
 * A node alone keeps aedes' own in-memory timers for session expiry and will delay; only the
 * session registry learns when a session ends (expired, or ended with its connection).
 */
export function useMemoryTimers(broker: Aedes, onEnded: (clientId: string) => void): void {
  const methods = broker as unknown as TimerMethods;
  publishWillsWithoutDelay(methods, broker);
  const wipe = methods._wipeSession.bind(broker);
  methods._wipeSession = (client) => {
    wipe(client);
    onEnded(client.id);
  };
}

/**
 * A node of a cluster: aedes' in-memory session-expiry and will-delay timers are replaced by
 * SessionTimers in Redis, which any node fires, including after this node died. A departing
 * MQTT 5 connection sets them; a CONNECT of the id on any node cancels them in its claim, so
 * aedes' clear methods have nothing to do. Wills with no delay go out at once, as aedes does.
 */
export function useClusterTimers(broker: Aedes, deps: ClusterTimerDeps): DelayedWills {
  const methods = broker as unknown as TimerMethods;
  publishWillsWithoutDelay(methods, broker);
  boundWillDelayBySession(methods, broker);
  const { timers, persistence, log } = deps;
  /** A delayed will's delay (s), from scheduleWill until the departure that carries it. */
  const pendingWills = new WeakMap<Client, number>();

  const depart = async (client: Client, sessionSeconds: number | undefined): Promise<void> => {
    const willDelaySeconds = pendingWills.get(client);
    pendingWills.delete(client);
    const clientId = client.id;
    const outcome = await timers.depart({
      clientId,
      epoch: deps.epochOf(client) ?? 0,
      sessionSeconds,
      willDelaySeconds,
    });
    // Ended with its connection: each will stored for the id is its connection's to publish
    // or delete, and one whose PUBLISH failed waits there for its retry (durable-wills.ts).
    if (outcome === "ended") await persistence.wipeSession(clientId, { keepWills: true });
    // A newer connection took the session over: this connection's delayed will is void.
    if (outcome === "superseded" && willDelaySeconds !== undefined) {
      await persistence.delWill({ id: clientId, brokerId: broker.id });
    }
  };
  const departLogged = (client: Client, sessionSeconds: number | undefined): void => {
    depart(client, sessionSeconds).catch((err: unknown) =>
      log.warn(
        { event: "session_timers.depart_failed", clientId: client.id, err },
        "could not set a departed session's timers; a dead node's sweep or restart takes them",
      ),
    );
  };

  methods.scheduleSessionExpiry = (client) => {
    // Nothing to expire or wipe: the most common MQTT 5 session costs no Redis command here.
    if (client.version !== 5 || isEphemeralSession(client)) return;
    departLogged(client, sessionExpiryOf(client));
  };
  methods.scheduleWill = (client, _will, delaySeconds) => {
    pendingWills.set(client, delaySeconds);
    // aedes calls scheduleSessionExpiry right after, unless another connection of the id is
    // registered here already: then the will departs alone.
    setImmediate(() => {
      if (pendingWills.has(client)) departLogged(client, undefined);
    });
  };
  methods.clearSessionExpiry = () => {};
  methods.clearDelayedWill = () => {};

  const publish = (packet: PublishPacket): Promise<void> =>
    new Promise((resolve, reject) =>
      broker.publish(packet, (err) => (err ? reject(err) : resolve())),
    );
  /** Wills this node published to its own subscribers and is still sending on to the others. */
  const forwarding = new Set<string>();
  const finish = async (brokerId: string, clientId: string): Promise<void> => {
    await persistence.delWill({ id: clientId, brokerId });
    deps.onWillPublished(clientId);
  };
  const forwardLater = (brokerId: string, clientId: string, forward: () => Promise<unknown>) => {
    const key = `${brokerId}\n${clientId}`;
    forwarding.add(key);
    let forwarded = false;
    retryUntilDone(broker, async () => {
      if (!forwarded) await forward();
      forwarded = true;
      await finish(brokerId, clientId);
      forwarding.delete(key);
    });
  };
  const publishWills = async (clientId: string): Promise<boolean> => {
    let left = 0;
    for (const [brokerId, will] of await persistence.willsOf(clientId)) {
      // Claimed elsewhere (being published there), or sent on from here: done once deleted.
      if (
        forwarding.has(`${brokerId}\n${clientId}`) ||
        !(await deps.willClaims.claim(brokerId, clientId))
      ) {
        left++;
        continue;
      }
      dropWillDelay(will);
      deps.prepareWill?.(will as unknown as PublishPacket);
      try {
        await publish(will as unknown as PublishPacket);
      } catch (error) {
        // This node's subscribers have it: the other nodes get it from here, not a second
        // copy from the timer's next turn. Otherwise no one has it: the next turn, on any
        // node, publishes it.
        if (error instanceof UnforwardedError) forwardLater(brokerId, clientId, error.forward);
        else await deps.willClaims.release(brokerId, clientId).catch(() => {});
        throw error;
      }
      await finish(brokerId, clientId);
    }
    return left === 0;
  };
  timers
    .start({ publishWills, wipe: (clientId) => persistence.wipeSession(clientId) })
    .catch((err: unknown) =>
      log.error(
        { event: "session_timers.start_failed", err },
        "could not start the session timers",
      ),
    );

  return {
    async defer(brokerId, clientId, delaySeconds) {
      const outcome = await timers.deferDeadNodeWill(brokerId, clientId, delaySeconds);
      if (outcome === "scheduled") await persistence.unindexWill(brokerId, clientId);
      else if (outcome === "void") await persistence.delWill({ id: clientId, brokerId });
      return outcome === "scheduled";
    },
  };
}
