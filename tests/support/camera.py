"""A live camera for the tests: a real process serving an HTTP MJPEG stream (as
an IP camera does) of scikit-learn's digits, one JPEG every 20 ms, until killed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.support.daemons import Lines

__all__ = ["start_camera"]

_CAMERA = textwrap.dedent('''
    import http.server, socketserver, sys, time
    import cv2, numpy as np
    from jetsplit.datasets import load_dataset
    digits = load_dataset("digits", "test")

    class Camera(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            i = 0
            while True:
                jpg = cv2.imencode(".jpg", digits.images[i % len(digits.images)])[1].tobytes()
                self.wfile.write(b"--frame\\r\\nContent-Type: image/jpeg\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(jpg))
                self.wfile.write(jpg + b"\\r\\n")
                self.wfile.flush()
                i += 1
                time.sleep(0.02)

        def log_message(self, *args):
            pass

    socketserver.ThreadingTCPServer.allow_reuse_address = True  # a camera that comes back on its port
    server = socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Camera)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()
''')


def start_camera(port: int = 0) -> tuple[subprocess.Popen[str], int]:
    """Start the camera on ``port`` (0: a free one; the same port again: a camera
    that comes back); returns the process and its port. Stop it with ``kill()``."""
    proc = subprocess.Popen([sys.executable, "-c", _CAMERA, *([str(port)] if port else [])],
                            stdout=subprocess.PIPE, text=True)
    line = Lines(proc.stdout).expect("", 30.0)  # its port, read with a timeout
    if line is None:
        proc.kill()
        raise RuntimeError(f"the test camera exited before it served (status {proc.wait(5)})")
    return proc, int(line)
