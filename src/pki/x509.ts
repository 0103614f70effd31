// tsyringe (inside @peculiar/x509) needs the Reflect metadata API first: keep this import first.
import "reflect-metadata";
import { webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";

// @peculiar/x509 keeps its default crypto in a module-level provider; Node's WebCrypto is the
// only one Sluice uses, so setting it here, where the library is first imported, is enough.
x509.cryptoProvider.set(webcrypto);

export { x509 };
export const subtle = webcrypto.subtle;
