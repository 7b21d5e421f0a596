package org.meshagent.interop.provider;

import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.util.ArrayList;
import java.util.List;
import org.apache.dubbo.common.URL;
import org.apache.dubbo.config.ApplicationConfig;
import org.apache.dubbo.config.MethodConfig;
import org.apache.dubbo.config.ProtocolConfig;
import org.apache.dubbo.config.RegistryConfig;
import org.apache.dubbo.config.ServiceConfig;
import org.apache.dubbo.config.bootstrap.DubboBootstrap;
import org.meshagent.interop.Args;
import org.meshagent.interop.Main;
import org.meshagent.interop.api.GreetingService;

/**
 * Exports {@link GreetingService} over dubbo/hessian2 and prints, once exported and registered:
 * <pre>
 * EXPORTED dubbo://127.0.0.1:PORT/org.meshagent.interop.api.GreetingService?...
 * READY dubbo://127.0.0.1:PORT
 * </pre>
 * Options (or system properties peer.KEY):
 * --registry zookeeper://127.0.0.1:2181 | N/A   (default N/A: no registry, direct calls only)
 * --port N (0 = pick a free one)  --host 127.0.0.1  --register-mode interface|instance|all
 * --app NAME  --version V  --group G  --id ID (whoami(); default host:port)
 * --timeout MS (service default, 3000)  --slow-timeout MS (method slow, 500)
 * --metadata-type local|remote (Dubbo default local)
 * --threads N (200)  --shutdown-wait MS (1000)  --serialize-check STRICT|WARN|DISABLE (Dubbo default)
 */
public final class ProviderMain {
    private ProviderMain() {
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
        String registry = args.get("registry", args.get("zk", "N/A"));
        String id = args.get("id", host + ":" + port);
        // Graceful shutdown waits this long for in-flight calls after SIGTERM (Dubbo default 10 s).
        System.setProperty("dubbo.service.shutdown.wait", args.get("shutdown-wait", "1000"));

        ApplicationConfig app = new ApplicationConfig(args.get("app", "meshagent-interop-provider"));
        app.setQosEnable(false); // the QoS server would fight over port 22222 between providers
        app.setRegisterMode(args.get("register-mode", "all"));
        // local (default): consumers fetch app-level metadata over RPC (MetadataService on the
        // dubbo port); remote: it is also written to ZooKeeper under /dubbo/metadata/APP/REVISION.
        String metadataType = args.get("metadata-type", null);
        if (metadataType != null) {
            app.setMetadataType(metadataType);
        }
        String check = args.get("serialize-check", null);
        if (check != null) {
            app.setSerializeCheckStatus(check);
        }

        ProtocolConfig protocol = new ProtocolConfig("dubbo", port);
        protocol.setHost(host);
        // Dubbo 3.2+ may advertise fastjson2 first; meshagent speaks hessian2, so pin it.
        protocol.setSerialization("hessian2");
        protocol.setPreferSerialization("hessian2");
        protocol.setThreads(args.getInt("threads", 200));

        ServiceConfig<GreetingService> service = new ServiceConfig<>();
        service.setInterface(GreetingService.class);
        service.setRef(new GreetingServiceImpl(id));
        service.setTimeout(args.getInt("timeout", 3000));
        service.setVersion(args.get("version", null));
        service.setGroup(args.get("group", null));
        MethodConfig slow = new MethodConfig();
        slow.setName("slow");
        slow.setTimeout(args.getInt("slow-timeout", 500));
        slow.setRetries(0);
        List<MethodConfig> methods = new ArrayList<>();
        methods.add(slow);
        service.setMethods(methods);

        DubboBootstrap bootstrap = DubboBootstrap.getInstance()
                .application(app)
                .registry(new RegistryConfig(registry))
                .protocol(protocol)
                .service(service);
        bootstrap.start();

        for (URL url : service.getExportedUrls()) {
            System.out.println("EXPORTED " + url.toFullString());
        }
        long ms = (System.nanoTime() - started) / 1_000_000;
        System.out.println("READY dubbo://" + host + ":" + port + " id=" + id + " startup_ms=" + ms);
        System.out.flush();
        bootstrap.await();
    }

    private static int freePort(String host) throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getByName(host))) {
            return s.getLocalPort();
        }
    }
}
