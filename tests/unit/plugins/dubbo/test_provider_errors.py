"""A Java provider's error text (StringUtils.toString(Throwable)) read into what a caller
needs: the exception and its causes, bounded, and whether the provider refused the request
itself (Dubbo's GenericFilter). The texts are a Dubbo 3.3 provider's, as received."""

from __future__ import annotations

from plugins.dubbo.provider_errors import (
    MAX_DETAIL,
    ProviderError,
    describe,
    exception_parts,
    parse,
    refused_the_request,
)

# SERVICE_ERROR for "age": "abc" in a generic call's Person argument (shortened stack).
CONVERSION = (
    'org.apache.dubbo.rpc.RpcException: java.lang.NumberFormatException: For input string: "abc"\n'
    "org.apache.dubbo.rpc.RpcException: java.lang.NumberFormatException: For input string:"
    ' "abc"\n'
    "\tat org.apache.dubbo.rpc.filter.GenericFilter.invoke(GenericFilter.java:130)\n"
    "\tat org.apache.dubbo.rpc.cluster.filter.FilterChainBuilder$CopyOfFilterChainNode"
    ".invoke(FilterChainBuilder.java:349)\n"
    'Caused by: java.lang.NumberFormatException: For input string: "abc"\n'
    "\tat java.base/java.lang.NumberFormatException.forInputString"
    "(NumberFormatException.java:67)\n"
    "\t... 25 more\n"
)


def test_the_exception_its_cause_and_where_it_was_thrown() -> None:
    said = parse(CONVERSION)
    assert said.summary.splitlines()[0] == CONVERSION.splitlines()[0]
    assert said.causes == ('java.lang.NumberFormatException: For input string: "abc"',)
    assert said.thrown_at == "org.apache.dubbo.rpc.filter.GenericFilter.invoke"
    assert refused_the_request(said)


def test_described_without_the_stack_and_without_repeating_a_quoted_cause() -> None:
    text = describe(parse(CONVERSION))
    assert "\tat " not in text and "GenericFilter" not in text and "more" not in text
    assert "caused by" not in text  # the summary already quotes it


def test_a_cause_not_in_the_summary_is_added() -> None:
    said = ProviderError("java.lang.IllegalStateException: busy", ("java.io.IOException: x",), "")
    assert (
        describe(said) == "java.lang.IllegalStateException: busy; caused by java.io.IOException: x"
    )


def test_an_error_thrown_elsewhere_is_not_a_refusal() -> None:
    overloaded = (
        "org.apache.dubbo.rpc.RpcException: Failed to invoke method echo in provider, cause: "
        "The service using threads greater than <dubbo:service executes=1 /> limited.\n"
        "\tat org.apache.dubbo.rpc.filter.ExecuteLimitFilter.invoke(ExecuteLimitFilter.java:58)\n"
    )
    assert not refused_the_request(parse(overloaded))
    assert not refused_the_request(parse("plain text, no stack"))
    assert parse("plain text, no stack") == ProviderError("plain text, no stack", (), "")


def test_bounded_whatever_the_provider_sends() -> None:
    huge = "x" * 100_000 + "\n" + "\n".join(f"Caused by: e{i}: " + "y" * 5000 for i in range(1000))
    said = parse(huge)
    assert len(said.causes) == 16
    assert len(describe(said)) <= MAX_DETAIL


# Java's printStackTrace of IllegalStateException("boom") caused by IOException caused by
# EOFException, one IllegalArgumentException suppressed (which has a cause of its own, and
# the IOException a suppressed one of its own).
NESTED = (
    "java.lang.IllegalStateException: boom\n"
    "\tat p.Impl.failWithCauses(Impl.java:10)\n"
    "\tSuppressed: java.lang.IllegalArgumentException: cleanup failed\n"
    "\t\tat p.Impl.failWithCauses(Impl.java:11)\n"
    "\tCaused by: java.lang.RuntimeException: inside the suppressed one\n"
    "\t\t... 3 more\n"
    "Caused by: java.io.IOException: disk gone\n"
    "\tat p.Impl.failWithCauses(Impl.java:9)\n"
    "\tSuppressed: java.lang.Error: the cause's own\n"
    "Caused by: java.io.EOFException: at byte 7\n"
    "\t... 4 more\n"
)


def test_causes_and_suppressed_of_the_outermost_exception_only() -> None:
    said = parse(NESTED)
    assert said.causes == ("java.io.IOException: disk gone", "java.io.EOFException: at byte 7")
    assert said.suppressed == ("java.lang.IllegalArgumentException: cleanup failed",)
    assert exception_parts(said.causes[0]) == {
        "type": "java.io.IOException",
        "message": "disk gone",
    }
    assert exception_parts("java.lang.Error") == {"type": "java.lang.Error", "message": ""}
