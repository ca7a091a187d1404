#!/usr/bin/env python3
"""GStreamer's webrtcbin as a WHIP publisher or a WHEP player, the way GStreamer's own
WHIP/WHEP elements use it: bundle-policy max-bundle (so every m-section after the first is
`m=... 0 ... a=bundle-only`), ICE gathered completely before the offer is POSTed (no
trickle), one offer and one answer.

    gst-webrtc-http.py publish URL TOKEN   VP8 (videotestsrc) and Opus (audiotestsrc) over WHIP
    gst-webrtc-http.py play URL TOKEN      receive-only video and audio over WHEP

Prints one JSON object per line on stdout, for the test to read:
    {"event": "offer", "sdp": "..."}        the offer it POSTs
    {"event": "answer", "status": 201, "location": "...", "sdp": "..."}
    {"event": "ice", "state": "connected"}  ICE connection state changes
    {"event": "rtp", "video": {"packets": N, "payload_types": [96]}, "audio": {...}}
                                            play: what arrived so far, twice a second
    {"event": "error", "message": "..."}    then it exits with status 1
It runs until it is sent SIGTERM or SIGINT, then DELETEs its session and exits 0.
"""
import json
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

PUBLISH_PIPELINE = """
webrtcbin name=webrtc bundle-policy=max-bundle
videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1
  ! vp8enc deadline=1 keyframe-max-dist=30 ! rtpvp8pay pt=96 mtu=1200
  ! application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000 ! webrtc.
audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! opusenc
  ! rtpopuspay pt=111
  ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 ! webrtc.
"""

# What a player offers to receive (whepsrc's default caps are the same kind of thing).
PLAY_CAPS = [
    "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000",
    "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,encoding-params=(string)2",
]


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


class Client:
    def __init__(self, role, url, token):
        self.url = url
        self.token = token
        self.location = None
        self.loop = GLib.MainLoop()
        self.received = {"video": {"packets": 0, "payload_types": set()}, "audio": {"packets": 0, "payload_types": set()}}
        if role == "publish":
            self.pipe = Gst.parse_launch(PUBLISH_PIPELINE)
            self.webrtc = self.pipe.get_by_name("webrtc")
        else:
            self.pipe = Gst.Pipeline.new("player")
            self.webrtc = Gst.ElementFactory.make("webrtcbin", "webrtc")
            self.webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
            self.pipe.add(self.webrtc)
            for caps in PLAY_CAPS:
                self.webrtc.emit("add-transceiver", GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY, Gst.Caps.from_string(caps))
            self.webrtc.connect("pad-added", self.on_pad_added)
            GLib.timeout_add(500, self.report_rtp)
        self.webrtc.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.webrtc.connect("notify::ice-gathering-state", self.on_gathering_state)
        self.webrtc.connect("notify::ice-connection-state", self.on_ice_state)
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_bus_error)
        self.offer_requested = False
        self.offered = False

    def fail(self, message):
        emit("error", message=message)
        self.pipe.set_state(Gst.State.NULL)
        sys.exit(1)

    def on_bus_error(self, _bus, message):
        err, debug = message.parse_error()
        self.fail(f"{err.message} ({debug})")

    def on_negotiation_needed(self, _element):
        # One offer, one answer: WHIP and WHEP have no renegotiation.
        if not self.offer_requested:
            self.offer_requested = True
            GLib.idle_add(self.create_offer)

    def create_offer(self):
        promise = Gst.Promise.new()
        self.webrtc.emit("create-offer", None, promise)
        promise.wait()
        # Keep the reply referenced while the offer is used: PyGObject hands out a copy of the
        # reply structure, and the offer read from it dies with that copy.
        reply = promise.get_reply()
        offer = reply.get_value("offer")
        self.webrtc.emit("set-local-description", offer, Gst.Promise.new())
        return False

    def on_gathering_state(self, _element, _pspec):
        if self.webrtc.get_property("ice-gathering-state") != GstWebRTC.WebRTCICEGatheringState.COMPLETE or self.offered:
            return
        self.offered = True
        # Gathering is complete: the local description now carries every candidate.
        GLib.idle_add(self.post_offer)

    def on_ice_state(self, _element, _pspec):
        state = self.webrtc.get_property("ice-connection-state")
        emit("ice", state=state.value_nick)

    def on_pad_added(self, _element, pad):
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps()
        kind = caps.get_structure(0).get_string("media") if caps else pad.get_property("transceiver").get_property("kind").value_nick
        pad.add_probe(Gst.PadProbeType.BUFFER, self.on_rtp, kind)
        sink = Gst.ElementFactory.make("fakesink")
        sink.set_property("async", False)
        self.pipe.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))

    def on_rtp(self, _pad, info, kind):
        ok, mapped = info.get_buffer().map(Gst.MapFlags.READ)
        if ok:
            if len(mapped.data) >= 12:
                got = self.received[kind]
                got["packets"] += 1
                got["payload_types"].add(mapped.data[1] & 0x7F)
            info.get_buffer().unmap(mapped)
        return Gst.PadProbeReturn.OK

    def report_rtp(self):
        emit("rtp", **{kind: {"packets": r["packets"], "payload_types": sorted(r["payload_types"])} for kind, r in self.received.items()})
        return True

    def post_offer(self):
        offer = self.webrtc.get_property("local-description").sdp.as_text()
        emit("offer", sdp=offer)
        req = urllib.request.Request(
            self.url,
            data=offer.encode(),
            method="POST",
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=20) as res:
                status = res.status
                location = res.headers.get("Location")
                answer = res.read().decode()
        except urllib.error.HTTPError as e:
            self.fail(f"POST answered {e.code}: {e.read().decode(errors='replace')}")
            return False
        except OSError as e:
            self.fail(f"POST failed: {e}")
            return False
        self.location = urllib.parse.urljoin(self.url, location) if location else None
        emit("answer", status=status, location=location, sdp=answer)
        ok, msg = GstSdp.SDPMessage.new_from_text(answer)
        if ok != GstSdp.SDPResult.OK:
            self.fail("answer is not parseable SDP")
        desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        self.webrtc.emit("set-remote-description", desc, Gst.Promise.new())
        return False

    def stop(self):
        if self.location is not None:
            req = urllib.request.Request(self.location, method="DELETE", headers={"Authorization": f"Bearer {self.token}"})
            try:
                urllib.request.urlopen(req, timeout=5).close()
            except OSError:
                pass  # the server may already be gone
        self.pipe.set_state(Gst.State.NULL)
        self.loop.quit()
        return False

    def run(self):
        if self.pipe.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            self.fail("pipeline did not start")
        for sig in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, self.stop)
        self.loop.run()


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("publish", "play"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    Gst.init(None)
    Client(*sys.argv[1:]).run()


if __name__ == "__main__":
    main()
