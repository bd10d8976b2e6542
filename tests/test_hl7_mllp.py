"""MLLP framing: good frames survive whatever broken bytes come before them."""

from integrations.hl7.mllp import Frame, FrameDecoder, FramingError, frame

MSG = b"MSH|^~\\&|A|B|C|D|20260101||ORM^O01|1|P|2.4\rPID|1"


def kinds(items):
    return [type(i).__name__ for i in items]


def test_frames_split_across_reads_and_back_to_back():
    data = frame(MSG) + frame(MSG + b"2")
    decoder = FrameDecoder()
    out = [item for byte in range(len(data)) for item in decoder.feed(data[byte:byte + 1])]
    assert [i.payload for i in out] == [MSG, MSG + b"2"]


def test_junk_between_frames_is_one_error_and_line_breaks_are_tolerated():
    out = FrameDecoder().feed(b"garbage" + frame(MSG) + b"\r\n" + frame(MSG))
    assert kinds(out) == ["FramingError", "Frame", "Frame"]
    assert out[0].head == b"garbage"


def test_unterminated_frame_then_good_frame():
    out = FrameDecoder().feed(b"\x0bMSH|half a message" + frame(MSG))
    assert kinds(out) == ["FramingError", "Frame"] and out[1].payload == MSG
    assert out[0].head.startswith(b"MSH|half")


def test_oversized_frame_is_dropped_and_the_next_one_kept():
    decoder = FrameDecoder(max_frame=1024)
    big = frame(MSG + b"x" * 5000)
    out = []
    for i in range(0, len(big), 700):  # arrives in pieces
        out += decoder.feed(big[i:i + 700])
    out += decoder.feed(frame(MSG))
    assert kinds(out) == ["FramingError", "Frame"]
    assert "exceeds 1024" in out[0].reason and out[0].head.startswith(MSH_PREFIX)
    assert out[1].payload == MSG


MSH_PREFIX = b"MSH|"


def test_end_block_without_carriage_return_still_ends_the_frame():
    out = FrameDecoder().feed(b"\x0b" + MSG + b"\x1c" + frame(MSG))
    assert [i.payload for i in out if isinstance(i, Frame)] == [MSG, MSG]


def test_close_inside_a_frame_reports_it():
    decoder = FrameDecoder()
    assert decoder.feed(b"\x0bMSH|partial") == []
    err = decoder.close()
    assert isinstance(err, FramingError) and "closed inside" in err.reason
