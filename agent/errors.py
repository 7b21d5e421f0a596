"""The one shallow error tree of meshagent.

Every error the agent raises on purpose derives from :class:`MeshAgentError`, so a caller
can tell "we refused this, and here is why" from a bug. The split between
:class:`LocalProtocolError` and :class:`RemoteProtocolError` follows h11: the first means
*we* were asked to send something the protocol forbids, the second that the *peer* sent
something malformed.
"""

from __future__ import annotations


class MeshAgentError(Exception):
    """Base of every deliberate meshagent error.

    ``chain`` is set on a failed call's error (agent.telemetry.context): the apps the call
    came through and the hop that failed, oldest first, for problem details and spans.
    """

    chain: tuple[dict[str, str], ...] = ()


class ConfigError(MeshAgentError):
    """The configuration is invalid; ``errors`` holds one line per problem, with its path."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class PluginError(ConfigError):
    """A plugin named in the configuration is unknown, duplicated or failed to load."""

    def __init__(self, message: str) -> None:
        super().__init__([message])


class ProtocolError(MeshAgentError):
    """Base for codec errors: a frame or value that cannot be encoded or decoded."""


class LocalProtocolError(ProtocolError):
    """We were asked to encode something the protocol cannot express."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol (bad magic, truncated, over a limit)."""


class FrameTooLarge(RemoteProtocolError):
    """A frame declared a length over the configured maximum; it is refused unread."""


class UpstreamError(MeshAgentError):
    """A call to a provider failed after the request left the agent, or could not be sent."""


class NoEndpointError(UpstreamError):
    """The cluster has no endpoint that may take traffic (none known, none healthy)."""


class UpstreamTimeout(UpstreamError):
    """The provider did not answer within the call's deadline."""


class RemoteApplicationError(UpstreamError):
    """The provider answered with an exception of its own (a Java exception, a gRPC status).

    ``exception_type`` names it as the provider does (``com.example.NotFoundException``).
    ``http_status`` is for protocols whose errors say what kind they are (a gRPC status
    code: NOT_FOUND is a 404); without it the API answers 502.
    """

    def __init__(
        self,
        message: str,
        exception_type: str,
        details: object = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.details = details
        self.http_status = http_status


class InvalidRequest(MeshAgentError):
    """A request body the protocol cannot use; ``errors`` holds (path, message) pairs.

    Protocol plugins validate their own JSON shapes (the API layer does not know them), and
    the caller deserves the same answer as for the API's own validation: each bad path.
    """

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{path}: {message}" for path, message in self.errors))


class InvokeNotSupported(MeshAgentError):
    """The protocol has no JSON invocation (or not for this service)."""


class ConnectError(UpstreamError):
    """A connection to a provider could not be established (refused, unreachable, timed out)."""


class RegistryError(MeshAgentError):
    """A registry operation failed (unreachable, rejected, unknown service)."""


class UnknownServiceError(RegistryError):
    """The service is not known to the agent's configuration or registry."""


class RegistrationConflict(RegistryError):
    """A registration would replace an instance the configuration declares: config and
    app registrations are separate, and the app may neither replace nor delete the
    config's (docs/registries.md)."""


class DrainingError(MeshAgentError):
    """The agent is draining (SIGTERM): it has withdrawn its registrations and takes no new
    ones, or the app would be advertised again while its pod goes away."""


class UnknownMethodError(UnknownServiceError):
    """The service is known but has no such method (an IDL's, a proto's); a 404 like it."""
