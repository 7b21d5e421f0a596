"""Dubbo framing in bytes alone: whole, byte by byte, random splits, and every refusal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.codec import NEED_DATA
from agent.errors import FrameTooLarge, LocalProtocolError, RemoteProtocolError
from plugins.dubbo.body import heartbeat_request, heartbeat_response
from plugins.dubbo.frame import (
    HEADER_SIZE,
    HESSIAN2,
    BodyTooLarge,
    Frame,
    FrameDecoder,
    Header,
    Status,
    frame_with_id,
    with_request_id,
)
from tests.support.work import interpreted, lines_run

# What the Java consumer sent for echo("hi"), taken from a capture (tests/interop):
# id -7661023889869291003, flags 0xc2 (request, two-way, hessian2), 258-byte body.
JAVA_ECHO_HEADER = bytes.fromhex("dabbc20095ae935cac8f420500000102")


def request(request_id: int, body: bytes, two_way: bool = True, serialization: int = 2) -> bytes:
    return Header(True, two_way, False, serialization, 0, request_id, len(body)).pack() + body


def drain(decoder: FrameDecoder) -> list[Frame]:
    frames = []
    while (event := decoder.next_event()) is not NEED_DATA:
        assert isinstance(event, Frame)
        frames.append(event)
    return frames


def test_header_layout_matches_java() -> None:
    header = Header.unpack(JAVA_ECHO_HEADER)
    assert header == Header(True, True, False, HESSIAN2, 0, -7661023889869291003, 258)
    assert header.pack() == JAVA_ECHO_HEADER


def test_response_header_flags() -> None:
    header = Header(False, False, False, HESSIAN2, Status.OK, 7, 3)
    assert header.pack()[2:4] == bytes([0x02, 20])
    # two_way is meaningless on a response: never set, never read back
    assert Header.unpack(Header(False, True, False, 2, 20, 7, 3).pack()).two_way is False


def test_heartbeat_frames() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(heartbeat_request(5) + heartbeat_response(5))
    ping, pong = drain(decoder)
    assert ping.header.request and ping.header.two_way and ping.heartbeat
    assert ping.header.pack()[2] == 0xE2  # request | two-way | event | hessian2
    assert ping.body == b"N"  # a hessian2 null
    assert not pong.header.request and pong.heartbeat
    assert (pong.header.request_id, pong.header.status) == (5, Status.OK)


def test_whole_several_frames_in_one_chunk() -> None:
    data = request(1, b"one") + request(2, b"") + request(3, b"three", two_way=False)
    decoder = FrameDecoder()
    decoder.receive_data(data)
    frames = drain(decoder)
    assert [(f.header.request_id, f.body) for f in frames] == [(1, b"one"), (2, b""), (3, b"three")]
    assert frames[2].header.two_way is False
    assert decoder.buffered == 0 and decoder.pending_header is None


def test_byte_by_byte() -> None:
    data = request(1, b"x" * 40) + heartbeat_request(2)
    decoder = FrameDecoder()
    frames: list[Frame] = []
    for i in range(len(data)):
        decoder.receive_data(data[i : i + 1])
        frames += drain(decoder)
        if i < HEADER_SIZE + 40 - 1:
            assert not frames
    assert [f.header.request_id for f in frames] == [1, 2]
    assert frames[0].body == b"x" * 40


frame_specs = st.lists(
    st.tuples(
        st.integers(-(2**63), 2**63 - 1),
        st.binary(max_size=300),
        st.booleans(),
        st.integers(0, 31),
    ),
    min_size=1,
    max_size=8,
)


@given(specs=frame_specs, data=st.data())
def test_random_splits(specs: list[tuple[int, bytes, bool, int]], data: st.DataObject) -> None:
    stream = b"".join(request(rid, body, two_way, ser) for rid, body, two_way, ser in specs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = FrameDecoder()
    frames: list[Frame] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        decoder.receive_data(stream[start:cut])
        frames += drain(decoder)
        start = cut
    assert [
        (f.header.request_id, f.body, f.header.two_way, f.header.serialization) for f in frames
    ] == specs
    # Re-encoding gives the same bytes back.
    assert b"".join(f.to_bytes() for f in frames) == stream


def test_bad_magic_refused_from_two_bytes() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"GE")  # an HTTP client on the Dubbo port
    with pytest.raises(RemoteProtocolError, match="bad magic 0x4745"):
        decoder.next_event()
    # The stream stays broken: Dubbo has no resynchronisation point.
    decoder.receive_data(request(1, b""))
    with pytest.raises(RemoteProtocolError, match="bad magic"):
        decoder.next_event()


def test_one_byte_is_not_judged_yet() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\xda")
    assert decoder.next_event() is NEED_DATA


def test_body_over_the_limit_refused_before_buffering() -> None:
    decoder = FrameDecoder(max_body=1024)
    header = Header(True, True, False, 2, 0, 99, 1025).pack()
    decoder.receive_data(header)
    with pytest.raises(BodyTooLarge, match="1025 bytes, over the limit of 1024") as caught:
        decoder.next_event()
    assert isinstance(caught.value, FrameTooLarge)
    assert caught.value.header.request_id == 99  # so a server can answer that id
    assert decoder.buffered == HEADER_SIZE  # nothing of the body was waited for


def test_body_at_the_limit_accepted() -> None:
    decoder = FrameDecoder(max_body=1024)
    decoder.receive_data(request(1, bytes(1024)))
    assert len(drain(decoder)[0].body) == 1024


def test_negative_length_refused() -> None:
    data = Header(True, True, False, 2, 0, 3, 0).pack()[:12] + (-5).to_bytes(4, "big", signed=True)
    decoder = FrameDecoder()
    decoder.receive_data(data)
    with pytest.raises(RemoteProtocolError, match="negative body length -5"):
        decoder.next_event()


def test_truncated_frame_waits_and_reports_its_header() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(request(8, b"abcdef")[:-2])
    assert decoder.next_event() is NEED_DATA
    pending = decoder.pending_header
    assert pending is not None and pending.request_id == 8 and pending.body_length == 6
    assert decoder.buffered == 4


def test_unknown_serialization_id_is_framed_and_passed_on() -> None:
    # Framing does not depend on the serialization: the proxy decides what to do with it.
    decoder = FrameDecoder()
    decoder.receive_data(request(4, b"\x01\x02", serialization=23))
    (frame,) = drain(decoder)
    assert frame.header.serialization == 23


def test_serialization_id_out_of_range_cannot_be_encoded() -> None:
    with pytest.raises(LocalProtocolError, match="serialization id 32"):
        Header(True, True, False, 32, 0, 1, 0).pack()


def test_event_response_flags() -> None:
    header = Header.unpack(heartbeat_response(1, serialization=6))
    assert header.event and not header.request and header.serialization == 6


@given(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1))
def test_request_id_rewriting(original: int, replacement: int) -> None:
    frame = request(original, b"body")
    rewritten = with_request_id(frame, replacement)
    assert Header.unpack(rewritten[:HEADER_SIZE]).request_id == replacement
    assert rewritten[HEADER_SIZE:] == b"body" and rewritten[:4] == frame[:4]
    decoder = FrameDecoder()
    decoder.receive_data(frame)
    (decoded,) = drain(decoder)
    assert frame_with_id(decoded, replacement) == rewritten


def test_frame_with_id_keeps_every_flag() -> None:
    for data in (heartbeat_request(1), heartbeat_response(1), request(1, b"x", two_way=False)):
        decoder = FrameDecoder()
        decoder.receive_data(data)
        (frame,) = drain(decoder)
        assert frame_with_id(frame, 1) == data


def frames_in_pieces(count: int, body: int, piece: int) -> int:
    """Lines of frame.py run to decode ``count`` frames of ``body`` bytes fed in ``piece``s."""
    frame = interpreted("plugins.dubbo.frame")
    wire = b"".join(request(i, b"\x07" * body) for i in range(count))

    def decode() -> int:
        decoder = frame.FrameDecoder(max_body=1 << 24)
        seen = 0
        for at in range(0, len(wire), piece):
            decoder.receive_data(wire[at : at + piece])
            while decoder.next_event() is not NEED_DATA:
                seen += 1
        return seen

    seen, lines = lines_run(frame, decode)
    assert seen == count
    return lines


def test_a_large_frame_in_small_reads_costs_work_linear_in_its_size() -> None:
    # Issue 25: every decoder keeps its place between reads. Ten times the body in the
    # same small reads is ten times the work (a re-walk from the frame's start would be a
    # hundred), and many frames cost each no more than one.
    small = frames_in_pieces(1, 20_000, 64)
    large = frames_in_pieces(1, 200_000, 64)
    assert large <= 10 * small * 1.05
    assert frames_in_pieces(100, 16, 1 << 16) <= 100 * frames_in_pieces(1, 16, 1 << 16)
