/**
 * A minimal MQTT client on a raw socket for load generation: PUBLISH packets from pre-encoded
 * templates, received PUBLISH packets split by offset, no parser or packet objects. It costs the
 * generator about the same at MQTT 3.1.1 and MQTT 5, so a comparison of the two levels measures
 * the broker (MQTT.js spends about half again as much per message at MQTT 5). Plain TCP only.
 */
import { EventEmitter } from "node:events";
import { connect as netConnect, type Socket } from "node:net";
import { mqttString, packet, remainingLength } from "../../../harness/raw-socket.js";
import type { LoadClient, LoadPublishOptions } from "./load-client.js";
import type { ProtocolLevel } from "./protocol-level.js";
import { CONNACK, PacketReader, PUBACK, PUBLISH, SUBACK } from "./raw-packets.js";

const CONNECT_TIMEOUT_MS = 10_000;
const KEEPALIVE_SECONDS = 60;

export interface RawClientOptions {
  clientId: string;
  protocolVersion: ProtocolLevel;
  fromAddress?: string;
  credentials?: { username: string; password: string };
}

/** A PUBLISH's bytes before its payload, per topic, QoS and property list. */
interface Template {
  head: Buffer;
  /** Where the packet id goes (QoS 1), from the packet's start. */
  packetIdOffset: number;
}

/** MQTT 5 properties: one User Property (0x26, two strings). */
function userPropertyBytes(properties: Record<string, string>): Buffer {
  const parts = Object.entries(properties).flatMap(([key, value]) => [
    Buffer.from([0x26]),
    mqttString(key),
    mqttString(value),
  ]);
  return Buffer.concat(parts);
}

export class RawClient extends EventEmitter implements LoadClient {
  private readonly templates = new Map<string, Template>();
  /** QoS 1 PUBLISH callbacks by packet id. */
  private readonly unacknowledged = new Map<number, (error?: Error) => void>();
  private nextPacketId = 1;
  private corked = false;
  /** QoS 0 callbacks waiting for the socket buffer to drain. */
  private waitingForDrain: Array<(error?: Error) => void> = [];
  private subscribed: ((granted: number) => void) | undefined;
  private connected: ((returnCode: number) => void) | undefined;

  private constructor(
    readonly stream: Socket,
    private readonly level: ProtocolLevel,
  ) {
    super();
    const reader = new PacketReader((first, body) => this.onPacket(first, body));
    stream.on("data", (chunk: Buffer) => reader.push(chunk));
    stream.on("drain", () => {
      for (const callback of this.waitingForDrain.splice(0)) callback();
    });
    stream.on("error", (error) => this.emit("error", error));
    stream.on("close", () => {
      const closed = new Error("connection closed");
      for (const callback of this.unacknowledged.values()) callback(closed);
      this.unacknowledged.clear();
    });
  }

  /** Connects and resolves once the broker accepted (CONNACK 0); rejects on refusal or timeout. */
  static async connect(url: string, options: RawClientOptions): Promise<RawClient> {
    const { protocol, hostname, port } = new URL(url);
    if (protocol !== "mqtt:") throw new Error(`raw clients speak plain mqtt:// only, not ${url}`);
    const socket = netConnect({
      host: hostname,
      port: Number(port),
      ...(options.fromAddress === undefined ? {} : { localAddress: options.fromAddress }),
    });
    socket.setNoDelay(true);
    const client = new RawClient(socket, options.protocolVersion);
    const accepted = new Promise<number>((resolve, reject) => {
      client.connected = resolve;
      socket.once("error", reject);
      socket.once("close", () => reject(new Error(`${options.clientId}: closed before CONNACK`)));
      setTimeout(() => reject(new Error(`${options.clientId}: no CONNACK`)), CONNECT_TIMEOUT_MS);
    });
    socket.write(connectPacket(options));
    const code = await accepted.catch((error: unknown) => {
      socket.destroy();
      throw error;
    });
    if (code !== 0) {
      socket.destroy();
      throw new Error(`${options.clientId}: CONNACK refused with ${code}`);
    }
    return client;
  }

  publish(
    topic: string,
    payload: Buffer,
    options: LoadPublishOptions,
    callback: (error?: Error) => void,
  ): void {
    const template = this.template(topic, payload.length, options);
    const bytes = Buffer.allocUnsafe(template.head.length + payload.length);
    template.head.copy(bytes);
    payload.copy(bytes, template.head.length);
    if (options.qos === 1) {
      const id = this.takePacketId();
      bytes.writeUInt16BE(id, template.packetIdOffset);
      this.unacknowledged.set(id, callback);
      this.write(bytes);
      return;
    }
    if (this.write(bytes)) callback();
    else this.waitingForDrain.push(callback);
  }

  async subscribeAsync(filter: string, options: { qos: 0 | 1 | 2 }): Promise<void> {
    const granted = new Promise<number>((resolve) => {
      this.subscribed = resolve;
    });
    const properties = this.level === 5 ? Buffer.from([0]) : Buffer.alloc(0);
    const body = Buffer.concat([
      Buffer.from([0, 1]),
      properties,
      mqttString(filter),
      Buffer.from([options.qos]),
    ]);
    this.stream.write(packet(0x82, body));
    const code = await granted;
    if (code >= 0x80) throw new Error(`SUBACK refused ${filter} with ${code}`);
  }

  end(): void {
    this.stream.end(Buffer.from([0xe0, 0]));
    this.stream.destroySoon();
  }

  /** Writes within one turn of the event loop go out as one writev (as MQTT.js corks too). */
  private write(bytes: Buffer): boolean {
    if (!this.corked) {
      this.corked = true;
      this.stream.cork();
      process.nextTick(() => {
        this.corked = false;
        this.stream.uncork();
      });
    }
    return this.stream.write(bytes);
  }

  private takePacketId(): number {
    const id = this.nextPacketId;
    this.nextPacketId = id === 0xffff ? 1 : id + 1;
    return id;
  }

  private template(topic: string, payloadBytes: number, options: LoadPublishOptions): Template {
    const { qos, properties } = options;
    const key = `${qos}${properties === undefined ? "" : "p"}${payloadBytes}/${topic}`;
    let template = this.templates.get(key);
    if (template) return template;
    const topicField = mqttString(topic);
    const packetId = qos === 1 ? Buffer.alloc(2) : Buffer.alloc(0);
    const propertyBytes = properties?.userProperties
      ? userPropertyBytes(properties.userProperties)
      : Buffer.alloc(0);
    const propertyField =
      this.level === 5
        ? Buffer.concat([remainingLength(propertyBytes.length), propertyBytes])
        : Buffer.alloc(0);
    const variableHeader = Buffer.concat([topicField, packetId, propertyField]);
    const fixedHeader = Buffer.concat([
      Buffer.from([0x30 | (qos << 1)]),
      remainingLength(variableHeader.length + payloadBytes),
    ]);
    template = {
      head: Buffer.concat([fixedHeader, variableHeader]),
      packetIdOffset: fixedHeader.length + topicField.length,
    };
    this.templates.set(key, template);
    return template;
  }

  private onPacket(first: number, body: Buffer): void {
    const type = first >> 4;
    if (type === PUBLISH) this.onPublish(first, body);
    else if (type === PUBACK) {
      const id = body.readUInt16BE(0);
      const callback = this.unacknowledged.get(id);
      this.unacknowledged.delete(id);
      // MQTT 5: a reason code of 0x80 or above is a refusal.
      const reason = body.length > 2 ? (body[2] ?? 0) : 0;
      callback?.(reason >= 0x80 ? new Error(`PUBACK reason ${reason}`) : undefined);
    } else if (type === CONNACK) this.connected?.(body[1] ?? 0xff);
    else if (type === SUBACK) {
      // Packet id, then (MQTT 5) the properties, then one code per filter: the last byte.
      this.subscribed?.(body[body.length - 1] ?? 0xff);
    }
  }

  private onPublish(first: number, body: Buffer): void {
    const qos = (first >> 1) & 3;
    const topicLength = body.readUInt16BE(0);
    let offset = 2 + topicLength;
    const packetId = qos > 0 ? body.readUInt16BE(offset) : 0;
    if (qos > 0) offset += 2;
    if (this.level === 5) {
      let propertiesLength = 0;
      let multiplier = 1;
      let byte: number;
      do {
        byte = body[offset++] ?? 0;
        propertiesLength += (byte & 0x7f) * multiplier;
        multiplier *= 128;
      } while (byte & 0x80);
      offset += propertiesLength;
    }
    this.emit("message", body.toString("utf8", 2, 2 + topicLength), body.subarray(offset));
    if (qos === 1) this.write(Buffer.from([0x40, 2, packetId >> 8, packetId & 0xff]));
  }
}

function connectPacket({ clientId, protocolVersion, credentials }: RawClientOptions): Buffer {
  let flags = 0x02;
  if (credentials) flags |= 0xc0;
  const keepalive = Buffer.alloc(2);
  keepalive.writeUInt16BE(KEEPALIVE_SECONDS);
  const parts = [mqttString("MQTT"), Buffer.from([protocolVersion, flags]), keepalive];
  if (protocolVersion === 5) parts.push(Buffer.from([0]));
  parts.push(mqttString(clientId));
  if (credentials) parts.push(mqttString(credentials.username), mqttString(credentials.password));
  return packet(0x10, Buffer.concat(parts));
}
