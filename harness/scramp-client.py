"""The client side of SCRAM-SHA-256 by scramp (PyPI), an implementation independent of Sluice's,
for interoperability tests: argv USER PASSWORD; prints the client-first message, reads the
server-first, prints the client-final, reads the server-final and exits 0 only when scramp
verified the server's signature. One message a line, UTF-8. scramp SASLpreps the user name and
the password itself (RFC 5802)."""
import sys

from scramp import ScramClient


def main() -> int:
    user, password = sys.argv[1], sys.argv[2]
    client = ScramClient(["SCRAM-SHA-256"], user, password)
    print(client.get_client_first(), flush=True)
    client.set_server_first(sys.stdin.readline().rstrip("\n"))
    print(client.get_client_final(), flush=True)
    client.set_server_final(sys.stdin.readline().rstrip("\n"))
    print("verified", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
