/** Bytes of MQTT's Variable Byte Integer for a value (the remaining length, property lengths). */
export function variableByteIntegerSize(value: number): number {
  if (value < 128) return 1;
  if (value < 16_384) return 2;
  if (value < 2_097_152) return 3;
  return 4;
}

/** Bytes of a packet's fixed header for its remaining length (1 type byte + 1-4 length bytes). */
export function fixedHeaderBytes(remainingLength: number): number {
  return 1 + variableByteIntegerSize(remainingLength);
}
