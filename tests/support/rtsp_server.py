# A real RTSP server for the tests: GStreamer's gst-rtsp-server serving one H.264 (or H.265)
# MP4 clip at rtsp://127.0.0.1:PORT/MOUNT, each client from the start of the clip, in real time.
# Usage: rtsp_server.py PORT MOUNT CLIP [h264|h265]   (prints "ready" once listening)
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

port, mount, clip = sys.argv[1], sys.argv[2], sys.argv[3]
codec = sys.argv[4] if len(sys.argv) > 4 else "h264"
pay = "rtph265pay" if codec == "h265" else "rtph264pay"
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f'( filesrc location="{clip}" ! qtdemux ! {pay} name=pay0 pt=96 config-interval=1 )'
)
server.get_mount_points().add_factory("/" + mount.lstrip("/"), factory)
if server.attach(None) == 0:
    sys.exit(f"cannot listen on port {port}")
print("ready", flush=True)
GLib.MainLoop().run()
