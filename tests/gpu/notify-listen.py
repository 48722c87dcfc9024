# The systemd notification socket of the GPU tests: binds NOTIFY_SOCKET's path (argv[1]) and
# appends each datagram dsv32d sends (READY=1, STATUS=..., STOPPING=1) to argv[2] as one line,
# its newlines turned into ';', until killed. Used by test-gpu-load-report.sh and
# test-gpu-fault.sh.
import socket
import sys

s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as f:
    while True:
        f.write(s.recv(65536).decode(errors="replace").replace("\n", ";") + "\n")
