import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "../observability/logger.js";
import {
  capConnectionsPerAddress,
  closeServer,
  HTTP_TIMEOUT_CHECK_MS,
  listenOn,
} from "../transport/server-utils.js";

/** What the probes and the scrape endpoint ask of the node. */
export interface HttpProbes {
  /** 200 on /readyz only while this is true. */
  isReady(): boolean;
  metrics(): Promise<{ contentType: string; body: string }>;
}

/** /healthz, /readyz and /metrics for Kubernetes probes and Prometheus. */
export class HttpServer {
  private readonly server: Server;

  constructor(
    private readonly host: string,
    private readonly port: number,
    probes: HttpProbes,
    private readonly logger: Logger,
    /** Open connections one address may hold; more are closed on accept. */
    maxConnectionsPerIp: number,
  ) {
    this.server = createServer(
      { connectionsCheckingInterval: HTTP_TIMEOUT_CHECK_MS },
      (req, res) => {
        this.route(req, res, probes).catch((error: unknown) => {
          logger.error({ event: "http.error", err: error, path: req.url }, "HTTP handler failed");
          if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
          res.end("internal error\n");
        });
      },
    );
    capConnectionsPerAddress(this.server, maxConnectionsPerIp, (ip) =>
      logger.debug(
        { event: "http.connection_refused", remoteAddress: ip, perIp: maxConnectionsPerIp },
        "probes connection refused: too many open from this address",
      ),
    );
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 10_000;
    this.server.keepAliveTimeout = 5_000;
  }

  private async route(
    req: IncomingMessage,
    res: ServerResponse,
    probes: HttpProbes,
  ): Promise<void> {
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" });
      res.end("method not allowed\n");
      return;
    }
    const path = (req.url ?? "/").split("?")[0];
    switch (path) {
      case "/healthz":
        send(res, 200, "text/plain", "ok\n");
        return;
      case "/readyz":
        if (probes.isReady()) send(res, 200, "text/plain", "ready\n");
        else send(res, 503, "text/plain", "not ready\n");
        return;
      case "/metrics": {
        const { contentType, body } = await probes.metrics();
        send(res, 200, contentType, body);
        return;
      }
      default:
        send(res, 404, "text/plain", "not found\n");
    }
  }

  async listen(): Promise<AddressInfo> {
    const address = await listenOn(this.server, this.host, this.port);
    this.logger.info(
      { event: "http.started", host: address.address, port: address.port },
      `HTTP probes and metrics on ${address.address}:${address.port}`,
    );
    return address;
  }

  async close(): Promise<void> {
    await closeServer(this.server);
    this.server.closeAllConnections();
  }
}

function send(res: ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, { "content-type": contentType, "cache-control": "no-store" });
  res.end(res.req.method === "HEAD" ? undefined : body);
}
