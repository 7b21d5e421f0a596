package org.meshagent.interop.consumer;

import com.fasterxml.jackson.annotation.JsonFormat;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedReader;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Type;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Date;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.dubbo.config.ApplicationConfig;
import org.apache.dubbo.config.MethodConfig;
import org.apache.dubbo.config.ReferenceConfig;
import org.apache.dubbo.config.RegistryConfig;
import org.apache.dubbo.config.bootstrap.DubboBootstrap;
import org.apache.dubbo.rpc.RpcException;
import org.apache.dubbo.rpc.service.GenericException;
import org.apache.dubbo.rpc.service.GenericService;
import org.meshagent.interop.Args;
import org.meshagent.interop.Main;
import org.meshagent.interop.api.GreetingService;

/**
 * {@code consumer call|generic|bench [options]}. Every line on stdout is one JSON object.
 * <p>
 * Target: {@code --url dubbo://127.0.0.1:PORT} (direct, Dubbo's reference {@code url}) or
 * {@code --registry zookeeper://127.0.0.1:2181} (with {@code --discovery interface|instance|auto}).
 * <p>
 * call / generic: run the built-in suite (suite.jsonl in the jar), or with {@code --stdin} read
 * JSON lines {"case"?, "method", "types"?, "args"} and print one result line per call:
 * {"case", "method", "ok": true, "result", "elapsed_us"} or
 * {"case", "method", "ok": false, "exception": CLASS, "message", "timeout": BOOL, "rpc_code"?, "elapsed_us"}.
 * {@code call} uses the normal interface stub, {@code generic} GenericService.$invoke (POJOs as maps).
 * <p>
 * bench: {@code --threads N --duration S --warmup S --payload BYTES [--generic]}: N callers of echo;
 * prints {"mode": "bench", "calls", "errors", "calls_per_s", "p50_us", "p90_us", "p99_us", "max_us", ...}.
 */
public final class ConsumerMain {
    static final String INTERFACE = GreetingService.class.getName();
    static final ObjectMapper JSON = new ObjectMapper();

    static {
        // BigDecimal as a string: JSON numbers would lose digits in most parsers.
        JSON.configOverride(BigDecimal.class).setFormat(JsonFormat.Value.forShape(JsonFormat.Shape.STRING));
    }

    private ConsumerMain() {
    }

    public static void main(String[] argv) throws Exception {
        Main.quietDubbo();
        Args args = new Args(argv);
        String mode = args.positional().isEmpty() ? "call" : args.positional().get(0);
        Main.pinLoopback(args.get("host", "127.0.0.1"));
        System.setProperty("dubbo.service.shutdown.wait", "100");
        String discovery = args.get("discovery", "auto");
        System.setProperty("dubbo.application.service-discovery.migration", switch (discovery) {
            case "interface" -> "FORCE_INTERFACE";
            case "instance" -> "FORCE_APPLICATION";
            default -> "APPLICATION_FIRST";
        });
        boolean generic = mode.equals("generic") || args.getBool("generic", false);
        int rc;
        try {
            Object proxy = connect(args, generic);
            Invoker invoker = generic ? new GenericInvoker((GenericService) proxy)
                    : new StubInvoker((GreetingService) proxy);
            rc = switch (mode) {
                case "call", "generic" -> runCalls(args, invoker);
                case "bench" -> Bench.run(args, invoker, generic);
                default -> throw new IllegalArgumentException("unknown mode " + mode);
            };
        } catch (Throwable t) {
            ObjectNode err = JSON.createObjectNode();
            err.put("fatal", t.getClass().getName());
            err.put("message", String.valueOf(t.getMessage()));
            System.out.println(JSON.writeValueAsString(err));
            System.out.flush();
            t.printStackTrace();
            rc = 1;
        }
        System.out.flush();
        System.exit(rc);
    }

    private static Object connect(Args args, boolean generic) {
        ApplicationConfig app = new ApplicationConfig(args.get("app", "meshagent-interop-consumer"));
        app.setQosEnable(false);
        String url = args.get("url", null);
        String registry = args.get("registry", args.get("zk", null));
        if ((url == null) == (registry == null)) {
            throw new IllegalArgumentException("give exactly one of --url dubbo://HOST:PORT or --registry zookeeper://HOST:PORT");
        }
        ReferenceConfig<Object> ref = new ReferenceConfig<>();
        ref.setInterface(INTERFACE);
        if (generic) {
            ref.setGeneric("true");
        }
        ref.setVersion(args.get("version", null));
        ref.setGroup(args.get("group", null));
        ref.setTimeout(args.getInt("timeout", 3000));
        ref.setRetries(args.getInt("retries", 0)); // a retried call would hide what the peer did
        ref.setCheck(args.getBool("check", true));
        String connections = args.get("connections", null);
        if (connections != null) {
            ref.setConnections(Integer.parseInt(connections));
        }
        Map<String, String> params = new HashMap<>();
        params.put("serialization", "hessian2");
        params.put("prefer.serialization", "hessian2");
        ref.setParameters(params);
        // Through a registry the provider's per-method timeout (slow.timeout=500) applies to stub
        // calls; a direct URL carries none, and generic calls look it up under "$invoke" (so it
        // never applies): set it on the reference in those cases.
        String slowTimeout = args.get("slow-timeout", url != null || generic ? "500" : null);
        if (slowTimeout != null) {
            MethodConfig slow = new MethodConfig();
            slow.setName("slow");
            slow.setTimeout(Integer.parseInt(slowTimeout));
            List<MethodConfig> methods = new ArrayList<>();
            methods.add(slow);
            ref.setMethods(methods);
        }
        DubboBootstrap bootstrap = DubboBootstrap.getInstance().application(app);
        if (url != null) {
            ref.setUrl(url);
        } else {
            bootstrap.registry(new RegistryConfig(registry));
        }
        bootstrap.reference(ref).start();
        return ref.get();
    }

    private static int runCalls(Args args, Invoker invoker) throws Exception {
        InputStream in = args.getBool("stdin", false) ? System.in
                : ConsumerMain.class.getResourceAsStream("/suite.jsonl");
        int failures = 0;
        try (BufferedReader r = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
            String line;
            while ((line = r.readLine()) != null) {
                if (line.isBlank()) {
                    continue;
                }
                JsonNode call = JSON.readTree(line);
                ObjectNode out = invoke(invoker, call);
                if (out.has("error")) {
                    failures++;
                }
                System.out.println(JSON.writeValueAsString(out));
                System.out.flush();
            }
        }
        return failures == 0 ? 0 : 3;
    }

    static ObjectNode invoke(Invoker invoker, JsonNode call) {
        String method = call.path("method").asText();
        ObjectNode out = JSON.createObjectNode();
        out.put("case", call.path("case").asText(method));
        out.put("method", method);
        long t0 = System.nanoTime();
        try {
            Object result = invoker.invoke(method, call.get("types"), call.get("args"));
            out.put("ok", true);
            out.set("result", JSON.valueToTree(result));
        } catch (IllegalArgumentException e) {
            // our own problem (bad request line), not the peer's
            out.put("ok", false);
            out.put("error", e.getMessage());
        } catch (Throwable t) {
            describe(out, t);
        }
        out.put("elapsed_us", (System.nanoTime() - t0) / 1000);
        return out;
    }

    static void describe(ObjectNode out, Throwable t) {
        while (t instanceof InvocationTargetException && t.getCause() != null) {
            t = t.getCause();
        }
        out.put("ok", false);
        if (t instanceof GenericException ge) {
            out.put("exception", ge.getExceptionClass());
            out.put("message", ge.getExceptionMessage());
        } else {
            out.put("exception", t.getClass().getName());
            out.put("message", String.valueOf(t.getMessage()));
        }
        if (t instanceof RpcException re) {
            out.put("timeout", re.isTimeout());
            out.put("rpc_code", re.getCode());
        } else {
            out.put("timeout", false);
        }
    }

    interface Invoker {
        Object invoke(String method, JsonNode types, JsonNode args) throws Throwable;
    }

    static Class<?> classFor(String name) {
        return switch (name) {
            case "int" -> int.class;
            case "long" -> long.class;
            case "double" -> double.class;
            case "float" -> float.class;
            case "boolean" -> boolean.class;
            case "short" -> short.class;
            case "byte" -> byte.class;
            case "char" -> char.class;
            default -> {
                try {
                    yield Class.forName(name);
                } catch (ClassNotFoundException e) {
                    throw new IllegalArgumentException("unknown type " + name);
                }
            }
        };
    }

    static Method findMethod(String name, JsonNode types, JsonNode args) {
        if (types != null && types.isArray()) {
            Class<?>[] classes = new Class<?>[types.size()];
            for (int i = 0; i < classes.length; i++) {
                classes[i] = classFor(types.get(i).asText());
            }
            try {
                return GreetingService.class.getMethod(name, classes);
            } catch (NoSuchMethodException e) {
                throw new IllegalArgumentException("no method " + name + types);
            }
        }
        int arity = args == null ? 0 : args.size();
        Method found = null;
        for (Method m : GreetingService.class.getMethods()) {
            if (m.getName().equals(name) && m.getParameterCount() == arity) {
                if (found != null) {
                    throw new IllegalArgumentException("overloaded " + name + ": give types");
                }
                found = m;
            }
        }
        if (found == null) {
            throw new IllegalArgumentException("no method " + name + "/" + arity);
        }
        return found;
    }

    /** Calls through the generated interface stub: JSON args become the declared Java types. */
    static final class StubInvoker implements Invoker {
        private final GreetingService stub;

        StubInvoker(GreetingService stub) {
            this.stub = stub;
        }

        GreetingService stub() {
            return stub;
        }

        @Override
        public Object invoke(String name, JsonNode types, JsonNode args) throws Throwable {
            Method m = findMethod(name, types, args);
            Type[] params = m.getGenericParameterTypes();
            Object[] values = new Object[params.length];
            for (int i = 0; i < params.length; i++) {
                values[i] = JSON.convertValue(args.get(i), JSON.constructType(params[i]));
            }
            return m.invoke(stub, values);
        }
    }

    /** Calls GenericService.$invoke: simple values typed, POJOs left as maps (Dubbo's generic form). */
    static final class GenericInvoker implements Invoker {
        private final GenericService generic;

        GenericInvoker(GenericService generic) {
            this.generic = generic;
        }

        GenericService generic() {
            return generic;
        }

        @Override
        public Object invoke(String name, JsonNode types, JsonNode args) throws Throwable {
            Method m = findMethod(name, types, args);
            Class<?>[] classes = m.getParameterTypes();
            String[] typeNames = new String[classes.length];
            Object[] values = new Object[classes.length];
            for (int i = 0; i < classes.length; i++) {
                Class<?> c = classes[i];
                typeNames[i] = c.getName();
                JsonNode v = args.get(i);
                if (c.isPrimitive() || c == String.class || Number.class.isAssignableFrom(c)
                        || c == Boolean.class || c == Date.class || c == BigDecimal.class
                        || c == BigInteger.class) {
                    values[i] = JSON.convertValue(v, c);
                } else {
                    values[i] = JSON.convertValue(v, Object.class);
                }
            }
            return generic.$invoke(name, typeNames, values);
        }
    }
}
