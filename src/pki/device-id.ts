import { PkiInputError } from "./pki-error.js";

/**
 * What a device id may look like. It becomes the certificate's CN and, with
 * `certificateIdentity: cn-is-clientid`, the MQTT client id, so it must be a valid client id
 * everywhere: MQTT 3.1.1 lets servers refuse anything beyond [0-9a-zA-Z] [MQTT-3.1.3-5], and
 * this stays close to that, adding only separators that need no escaping in a distinguished
 * name, a file name, a URL path segment or an ACL pattern (no '/', '+', '#', ',', '=', spaces).
 */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
export const DEVICE_ID_RULE =
  "1-128 characters of A-Z a-z 0-9 . _ : - (starting with a letter or digit)";
export const DEVICE_ID_MAX_LENGTH = 128;

/** Returns the device id unchanged, or throws PkiInputError saying what is wrong with it. */
export function validateDeviceId(deviceId: unknown): string {
  if (typeof deviceId !== "string" || deviceId.length === 0) {
    throw new PkiInputError("the device id must be a non-empty string");
  }
  if (deviceId.length > DEVICE_ID_MAX_LENGTH) {
    throw new PkiInputError(`the device id is longer than ${DEVICE_ID_MAX_LENGTH} characters`);
  }
  if (!DEVICE_ID_PATTERN.test(deviceId)) {
    throw new PkiInputError(
      "the device id may only contain letters, digits, '.', '_', ':' and '-', starting with a letter or digit",
    );
  }
  // "." and ".." are fine as a CN but would be path traversal as the CLI's default file name.
  if (/^\.+$/.test(deviceId)) throw new PkiInputError("the device id must not be only dots");
  return deviceId;
}
