"""Connect to the host's end of the kernel channel, then become the relay on that socket.

Run inside the kernel host as ``python -I -c <this source> SOCKET RELAY_SOURCE CONNECTION_FILE``.
The host listens on SOCKET, in a directory it mounts read-only into the container. Once connected,
the socket is this process's stdin and stdout and the process execs the relay: the same pid, which
is how the host tells, by the peer's credentials, that the connection is this exec's and no one
else's in the container.
"""

import os
import socket
import sys


def main() -> None:
    path, relay, connection = sys.argv[1:4]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    os.dup2(sock.fileno(), 0)
    os.dup2(sock.fileno(), 1)
    sock.close()
    os.execv(sys.executable, [sys.executable, "-I", "-c", relay, connection])


main()
