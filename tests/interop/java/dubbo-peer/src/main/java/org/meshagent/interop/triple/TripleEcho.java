package org.meshagent.interop.triple;

import org.apache.dubbo.common.stream.StreamObserver;
import org.meshagent.interop.triple.proto.EchoReply;
import org.meshagent.interop.triple.proto.EchoRequest;

/**
 * The Triple service, declared as a Java interface over protobuf messages (no Dubbo stub
 * generator): Dubbo sends protobuf parameters unwrapped, as a gRPC server would, so gRPC
 * clients call it by the names in triple_echo.proto.
 */
public interface TripleEcho {
    EchoReply unary(EchoRequest request);

    void serverStream(EchoRequest request, StreamObserver<EchoReply> replies);

    StreamObserver<EchoRequest> bidiStream(StreamObserver<EchoReply> replies);
}
