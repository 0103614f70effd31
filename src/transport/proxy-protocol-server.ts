import { createServer, type Server, type Socket } from "node:net";
import { ProxyHeaderError } from "../errors.js";
import type { ClientOrigin, ListenerRejection } from "./listener.js";
import { type ProxiedSource, parseProxyHeader } from "./proxy-header.js";
import { normalizeAddress, type TrustedProxies } from "./trusted-proxies.js";

export interface ProxyProtocolOptions {
  /** Who may send a header; any other peer is refused. */
  trusted: TrustedProxies;
  /** The whole header must arrive within this (`limits.connectTimeoutMs`). */
  headerTimeoutMs: number;
  /** TCP_NODELAY on the accepted sockets (the listener's `noDelay`); default true. */
  noDelay?: boolean;
}

/**
 * The TCP server of a `proxyProtocol: true` listener. Only trusted proxies may connect; each
 * connection must open with a PROXY v1 or v2 header, read here byte-bounded and within the
 * deadline, before any MQTT or TLS byte is looked at. The socket is then handed on, the bytes
 * that followed the header put back in front of it, with the client's address it announced.
 */
export function createProxyProtocolServer(
  options: ProxyProtocolOptions,
  onRejected: (reason: ListenerRejection, error?: Error) => void,
  handOff: (socket: Socket, origin: ClientOrigin) => void,
): Server {
  return createServer({ noDelay: options.noDelay ?? true }, (socket: Socket) => {
    // Until the header is read nobody else listens for errors; a reset must not crash the node.
    socket.on("error", noop);
    const peer = normalizeAddress(socket.remoteAddress ?? "");
    if (!options.trusted.has(peer)) {
      socket.destroy();
      onRejected("proxy_untrusted");
      return;
    }
    readProxyHeader(socket, options.headerTimeoutMs).then(
      (source) =>
        handOff(
          socket,
          source
            ? { remoteAddress: source.address, remotePort: source.port, proxyAddress: peer }
            : { remoteAddress: peer, remotePort: socket.remotePort ?? 0 },
        ),
      (error: ProxyHeaderError) => {
        socket.destroy();
        // A peer that leaves before sending anything useful is no refusal (e.g. a TCP check).
        if (error.kind === "invalid") onRejected("proxy_header_invalid", error);
        else if (error.kind === "timeout") onRejected("proxy_header_timeout", error);
      },
    );
  });
}

/**
 * Reads a PROXY header off the front of a socket without entering flowing mode, and puts back
 * whatever followed it. Resolves with the announced client, or undefined when the socket's own
 * address stands (LOCAL, UNKNOWN); rejects with a ProxyHeaderError. At most one read's worth of
 * bytes past the header limits is ever held.
 */
function readProxyHeader(socket: Socket, timeoutMs: number): Promise<ProxiedSource | undefined> {
  return new Promise((resolve, reject) => {
    let buffered: Buffer = Buffer.alloc(0);
    const finish = (): void => {
      clearTimeout(timer);
      socket.off("readable", onReadable);
      socket.off("end", onGone);
      socket.off("close", onGone);
    };
    const fail = (error: ProxyHeaderError): void => {
      finish();
      reject(error);
    };
    const onGone = (): void =>
      fail(new ProxyHeaderError("closed", "connection closed before the PROXY header"));
    const onReadable = (): void => {
      for (let chunk = socket.read() as Buffer | null; chunk !== null; chunk = socket.read()) {
        buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
        const parsed = parseProxyHeader(buffered);
        if (parsed.status === "incomplete") continue;
        if (parsed.status === "invalid") {
          fail(new ProxyHeaderError("invalid", parsed.reason));
          return;
        }
        finish();
        const rest = buffered.subarray(parsed.length);
        if (rest.length > 0) socket.unshift(rest);
        resolve(parsed.source);
        return;
      }
    };
    const timer = setTimeout(
      () => fail(new ProxyHeaderError("timeout", `no PROXY header within ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.on("readable", onReadable);
    socket.once("end", onGone);
    socket.once("close", onGone);
  });
}

function noop(): void {}
