/** The parts of msgpack-lite (no types of its own) that Sluice's Redis persistence uses. */
declare module "msgpack-lite" {
  const msgpack: {
    encode(value: unknown): Buffer;
    decode(buffer: Buffer | Uint8Array): unknown;
  };
  export default msgpack;
}
