import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from "node:crypto";

/**
 * The client side of SCRAM-SHA-256 (RFC 5802/7677), written apart from the server's so that a
 * test does not check the server against its own arithmetic: client-first, then client-final
 * from the server-first, then the server-final checked.
 */
export class ScramClient {
  readonly clientFirst: Buffer;
  private readonly clientFirstBare: string;
  private authMessage = "";
  private saltedPassword = Buffer.alloc(0);

  constructor(
    readonly username: string,
    private readonly password: string,
    private readonly nonce = randomBytes(12).toString("base64"),
  ) {
    const saslName = username.replace(/=/g, "=3D").replace(/,/g, "=2C");
    this.clientFirstBare = `n=${saslName},r=${this.nonce}`;
    this.clientFirst = Buffer.from(`n,,${this.clientFirstBare}`);
  }

  /** The client-final message answering the server-first one. */
  final(serverFirst: Buffer): Buffer {
    const text = serverFirst.toString();
    const fields = Object.fromEntries(text.split(",").map((f) => [f[0], f.slice(2)]));
    const combined = fields.r ?? "";
    if (!combined.startsWith(this.nonce)) throw new Error("server nonce does not extend ours");
    this.saltedPassword = pbkdf2Sync(
      this.password,
      Buffer.from(fields.s ?? "", "base64"),
      Number(fields.i),
      32,
      "sha256",
    );
    const withoutProof = `c=biws,r=${combined}`;
    this.authMessage = `${this.clientFirstBare},${text},${withoutProof}`;
    const clientKey = hmac(this.saltedPassword, "Client Key");
    const signature = hmac(createHash("sha256").update(clientKey).digest(), this.authMessage);
    const proof = Buffer.from(clientKey.map((byte, i) => byte ^ (signature[i] as number)));
    return Buffer.from(`${withoutProof},p=${proof.toString("base64")}`);
  }

  /** Whether the server-final message proves the server holds this user's ServerKey. */
  serverVerified(serverFinal: Buffer | undefined): boolean {
    if (serverFinal === undefined || this.authMessage === "") return false;
    const expected = Buffer.from(
      `v=${hmac(hmac(this.saltedPassword, "Server Key"), this.authMessage).toString("base64")}`,
    );
    return expected.length === serverFinal.length && timingSafeEqual(expected, serverFinal);
  }
}

function hmac(key: Buffer, data: string): Buffer {
  return createHmac("sha256", key).update(data).digest();
}
