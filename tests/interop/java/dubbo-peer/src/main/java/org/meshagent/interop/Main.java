package org.meshagent.interop;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.meshagent.interop.consumer.ConsumerMain;
import org.meshagent.interop.provider.ProviderMain;
import org.meshagent.interop.triple.TripleProviderMain;

/** {@code java -jar dubbo-peer.jar provider|consumer|triple-provider [options]}. */
public final class Main {
    private Main() {
    }

    public static void main(String[] argv) throws Exception {
        if (argv.length == 0) {
            System.err.println("usage: java -jar dubbo-peer.jar provider|consumer|triple-provider [options]  (see README.md)");
            System.exit(2);
        }
        String[] rest = Arrays.copyOfRange(argv, 1, argv.length);
        switch (argv[0]) {
            case "provider" -> ProviderMain.main(rest);
            case "consumer" -> ConsumerMain.main(rest);
            case "triple-provider" -> TripleProviderMain.main(rest);
            default -> {
                System.err.println("unknown command: " + argv[0]);
                System.exit(2);
            }
        }
    }

    /** Settings that must be in place before the first Dubbo class initialises. */
    public static void quietDubbo() {
        // Dubbo picks its logger adapter in a static initialiser; slf4j-simple is configured by
        // simplelogger.properties (WARN, stderr), so stdout carries only our own lines.
        System.setProperty("dubbo.application.logger", "slf4j");
        System.setProperty("java.net.preferIPv4Stack", "true");
    }

    /**
     * Make Dubbo register {@code 127.x} addresses. Dubbo treats every 127.* host as "invalid" and
     * replaces it with the first non-loopback interface address (or the host name's address), so a
     * plain {@code ProtocolConfig.setHost("127.0.0.1")} still registers e.g. 192.168.x.y. When all
     * interfaces are ignored and the host name resolves to loopback, Dubbo falls back to 127.0.0.1.
     * Must run before anything resolves a name (the JDK reads jdk.net.hosts.file once).
     */
    public static void pinLoopback(String host) {
        if (!host.startsWith("127.") && !host.equals("localhost")) {
            return;
        }
        System.setProperty("dubbo.network.interface.ignored", ".*");
        try {
            String hostname = Files.readString(Path.of("/proc/sys/kernel/hostname")).trim();
            Path hosts = Files.createTempFile("dubbo-peer-hosts", ".txt");
            hosts.toFile().deleteOnExit();
            Files.writeString(hosts, "127.0.0.1 localhost " + hostname + "\n::1 localhost\n");
            System.setProperty("jdk.net.hosts.file", hosts.toString());
        } catch (IOException | RuntimeException e) {
            // not Linux: keep the system resolver; the registered address may then be non-loopback
        }
    }
}
