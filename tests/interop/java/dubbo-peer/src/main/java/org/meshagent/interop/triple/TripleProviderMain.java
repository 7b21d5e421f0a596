package org.meshagent.interop.triple;

import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import org.apache.dubbo.common.URL;
import org.apache.dubbo.config.ApplicationConfig;
import org.apache.dubbo.config.ProtocolConfig;
import org.apache.dubbo.config.RegistryConfig;
import org.apache.dubbo.config.ServiceConfig;
import org.apache.dubbo.config.bootstrap.DubboBootstrap;
import org.apache.dubbo.rpc.protocol.tri.service.SchemaDescriptorRegistry;
import org.meshagent.interop.Args;
import org.meshagent.interop.Main;
import org.meshagent.interop.triple.proto.TripleEchoProto;

/**
 * Exports {@link TripleEcho} over Dubbo's Triple protocol ({@code tri}, gRPC-compatible HTTP/2)
 * with the gRPC health and server reflection services, and prints, once exported and registered:
 * <pre>
 * EXPORTED tri://127.0.0.1:PORT/org.meshagent.interop.triple.TripleEcho?...
 * READY tri://127.0.0.1:PORT id=ID startup_ms=N
 * </pre>
 * Options (or system properties peer.KEY): --registry zookeeper://... | N/A, --port N (0: free),
 * --host, --register-mode interface|instance|all, --app, --id, --version, --group,
 * --also-version V (the service exported a second time, version V, same group, answering as
 * ID@V: a Triple provider picks between them by the tri-service-version header).
 */
public final class TripleProviderMain {
    private TripleProviderMain() {
    }

    public static void main(String[] argv) throws Exception {
        Main.quietDubbo();
        long started = System.nanoTime();
        Args args = new Args(argv);
        String host = args.get("host", "127.0.0.1");
        Main.pinLoopback(host);
        int port = args.getInt("port", 0);
        if (port == 0) {
            port = freePort(host);
        }
        String registry = args.get("registry", "N/A");
        String id = args.get("id", host + ":" + port);
        System.setProperty("dubbo.service.shutdown.wait", args.get("shutdown-wait", "1000"));
        // Triple's built-in grpc.health.v1 and grpc.reflection.v1alpha services (off by default).
        System.setProperty("dubbo.tri.builtin.service.init", "true");
        // Reflection answers from this registry; Dubbo's stub generator would fill it, a plain
        // interface over protobuf messages has to say which file describes the service.
        SchemaDescriptorRegistry.addSchemaDescriptor(
                TripleEcho.class.getName(), TripleEchoProto.getDescriptor());

        ApplicationConfig app = new ApplicationConfig(args.get("app", "meshagent-triple-provider"));
        app.setQosEnable(false);
        app.setRegisterMode(args.get("register-mode", "all"));

        ProtocolConfig protocol = new ProtocolConfig("tri", port);
        protocol.setHost(host);

        ServiceConfig<TripleEcho> service = new ServiceConfig<>();
        service.setInterface(TripleEcho.class);
        service.setRef(new TripleEchoImpl(id));
        service.setVersion(args.get("version", null));
        service.setGroup(args.get("group", null));

        DubboBootstrap bootstrap = DubboBootstrap.getInstance()
                .application(app)
                .registry(new RegistryConfig(registry))
                .protocol(protocol)
                .service(service);
        String alsoVersion = args.get("also-version", null);
        if (alsoVersion != null) {
            ServiceConfig<TripleEcho> other = new ServiceConfig<>();
            other.setInterface(TripleEcho.class);
            other.setRef(new TripleEchoImpl(id + "@" + alsoVersion));
            other.setVersion(alsoVersion);
            other.setGroup(args.get("group", null));
            bootstrap.service(other);
        }
        bootstrap.start();

        for (URL url : service.getExportedUrls()) {
            System.out.println("EXPORTED " + url.toFullString());
        }
        long ms = (System.nanoTime() - started) / 1_000_000;
        System.out.println("READY tri://" + host + ":" + port + " id=" + id + " startup_ms=" + ms);
        System.out.flush();
        bootstrap.await();
    }

    private static int freePort(String host) throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getByName(host))) {
            return s.getLocalPort();
        }
    }
}
