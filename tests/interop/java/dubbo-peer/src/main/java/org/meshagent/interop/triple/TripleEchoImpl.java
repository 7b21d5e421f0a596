package org.meshagent.interop.triple;

import org.apache.dubbo.common.stream.StreamObserver;
import org.apache.dubbo.rpc.RpcContext;
import org.apache.dubbo.rpc.TriRpcStatus;
import org.meshagent.interop.triple.proto.EchoReply;
import org.meshagent.interop.triple.proto.EchoRequest;

public final class TripleEchoImpl implements TripleEcho {
    private final String id;

    public TripleEchoImpl(String id) {
        this.id = id;
    }

    private EchoReply reply(EchoRequest request, int index, String echoed) {
        return EchoReply.newBuilder()
                .setMessage(request.getMessage())
                .setServer(id)
                .setIndex(index)
                .setEchoed(echoed)
                .build();
    }

    private static String echoed() {
        Object value = RpcContext.getServerAttachment().getObjectAttachment("x-echo");
        return value == null ? "" : value.toString();
    }

    private static void check(EchoRequest request) {
        if (request.getCode() != 0) {
            throw TriRpcStatus.fromCode(request.getCode()).withDescription(request.getMessage()).asException();
        }
    }

    @Override
    public EchoReply unary(EchoRequest request) {
        check(request);
        return reply(request, 0, echoed());
    }

    @Override
    public void serverStream(EchoRequest request, StreamObserver<EchoReply> replies) {
        if (request.getCode() != 0) {
            replies.onError(TriRpcStatus.fromCode(request.getCode()).withDescription(request.getMessage()).asException());
            return;
        }
        String echoed = echoed();
        for (int i = 0; i < request.getCount(); i++) {
            replies.onNext(reply(request, i, echoed));
        }
        replies.onCompleted();
    }

    @Override
    public StreamObserver<EchoRequest> bidiStream(StreamObserver<EchoReply> replies) {
        String echoed = echoed();
        return new StreamObserver<>() {
            private int index;

            @Override
            public void onNext(EchoRequest request) {
                replies.onNext(reply(request, index++, echoed));
            }

            @Override
            public void onError(Throwable error) {
                replies.onError(error);
            }

            @Override
            public void onCompleted() {
                replies.onCompleted();
            }
        };
    }
}
