import { SluiceError } from "../errors.js";

/**
 * Input to the device CA was refused: a malformed or oversized PEM, a CSR whose signature does
 * not verify or whose name is not the device's, an unsupported key, a device id or lifetime out
 * of bounds, CA material that cannot sign. The message says what and why, and is safe to show
 * the caller (it never contains key material): the admin API maps it to HTTP 400, the command
 * line to exit code 2.
 */
export class PkiInputError extends SluiceError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("PKI_INVALID_INPUT", message, options);
  }
}
