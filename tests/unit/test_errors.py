from __future__ import annotations

from agent import errors


def test_the_error_tree_is_shallow_and_rooted() -> None:
    for name in dir(errors):
        value = getattr(errors, name)
        if (
            isinstance(value, type)
            and issubclass(value, Exception)
            and value.__module__ == errors.__name__
        ):
            assert issubclass(value, errors.MeshAgentError)
    assert issubclass(errors.FrameTooLarge, errors.RemoteProtocolError)
    assert issubclass(errors.UpstreamTimeout, errors.UpstreamError)
    assert errors.ConfigError(["a: x", "b: y"]).errors == ["a: x", "b: y"]
