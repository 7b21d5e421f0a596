package meshagent.interop;

import com.alibaba.com.caucho.hessian.io.Hessian2Input;
import com.alibaba.com.caucho.hessian.io.Hessian2Output;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import java.math.BigDecimal;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Date;
import java.util.HashMap;
import java.util.IdentityHashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.LinkedList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Conformance vectors for meshagent's Python Hessian 2.0 codec.
 *
 * <pre>
 *   write DIR   write every vector as DIR/NAME.bin, the way Dubbo writes a body: one
 *               Hessian2Output, one writeObject per value, references shared.
 *   check DIR   read DIR/NAME.bin (written by Python) with Hessian2Input and compare with
 *               the expected objects, sharing of references included; one PASS/FAIL line
 *               per vector, exit status 1 on any failure.
 *   echo DIR    for every DIR/NAME.in (a 4-byte value count, then a Hessian stream written
 *               by Python) read the values and write them again with one Hessian2Output
 *               into DIR/NAME.out: a differential test of our encoder on random streams.
 * </pre>
 *
 * The Python test (tests/interop/test_hessian2_java.py) holds the same vectors by name.
 */
public final class HessianVectors {
    private HessianVectors() {
    }

    static Map<String, Object[]> vectors() throws Exception {
        Map<String, Object[]> v = new LinkedHashMap<>();

        v.put("ints", new Object[] {0, -16, 47, -17, 48, -2048, 2047, -2049, 2048, -262144, 262143,
            -262145, 262144, Integer.MIN_VALUE, Integer.MAX_VALUE});
        v.put("longs", new Object[] {0L, -8L, 15L, -9L, 16L, -2048L, 2047L, -2049L, 2048L, -262144L,
            262143L, -262145L, 262144L, (long) Integer.MIN_VALUE, (long) Integer.MAX_VALUE,
            Integer.MIN_VALUE - 1L, Integer.MAX_VALUE + 1L, Long.MIN_VALUE, Long.MAX_VALUE});
        v.put("doubles", new Object[] {0.0, 1.0, 127.0, -128.0, 128.0, -129.0, 32767.0, -32768.0,
            32768.0, -32769.0, 0.5, 12.25, 0.001, -1.5, 3.14159, 0.1, 2147483.647, 2147483.648,
            1e300, -1e-300, Double.MIN_VALUE, Double.MAX_VALUE, Double.NaN,
            Double.POSITIVE_INFINITY, Double.NEGATIVE_INFINITY, 1.0e10, -2.5e9});
        v.put("bool_null", new Object[] {true, false, null});
        v.put("dates", new Object[] {new Date(0L), new Date(60000L * 12345), new Date(1700000000123L),
            new Date(-1L), new Date(-60000L * 100), new Date(60000L * (1L << 31)),
            new Date(253402300799999L)});
        v.put("strings", new Object[] {"", "a", "x".repeat(31), "x".repeat(32), "x".repeat(1023),
            "x".repeat(1024), "h\u00e9llo w\u00f6rld \u20ac", "\ud83d\ude00", "a\ud83d\ude00b",
            "lone \ud800 surrogate", "\u00e9".repeat(5000) + "\u20ac"});
        v.put("strings_chunked", new Object[] {"x".repeat(32768), "y".repeat(32769),
            "a".repeat(32767) + "\ud83d\ude00" + "b".repeat(10),
            "\u00e9\ud83d\ude00".repeat(25000)});
        v.put("binaries", new Object[] {bytes(0), bytes(1), bytes(15), bytes(16), bytes(1023),
            bytes(1024), bytes(8189), bytes(8190), bytes(20000), bytes(70000)});
        v.put("binary_after_string", new Object[] {"\u00e9".repeat(5000), bytes(9000),
            "z".repeat(8000), bytes(300), bytes(8180)});
        v.put("lists", new Object[] {new ArrayList<>(), list(1, "two", null, true),
            list(0, 1, 2, 3, 4, 5, 6, 7), list(list(1), list(2, list(3))),
            new LinkedList<>(List.of(1, 2)), new LinkedList<>(List.of(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)),
            new LinkedList<>(List.of(3)), new int[] {1, 2, 3}, new long[] {1L, 2L},
            new String[] {"a", "b"}, new Object[] {1, "x", null}, new double[] {1.5, 2.0}});
        Map<Object, Object> one = new HashMap<>();
        one.put("a", 1);
        Map<Object, Object> numbered = new HashMap<>();
        numbered.put(1, "one");
        numbered.put(2, "two");
        Map<Object, Object> linked = new LinkedHashMap<>();
        linked.put("z", 1);
        linked.put("a", 2);
        Map<Object, Object> tree = new TreeMap<>();
        tree.put("b", 2);
        tree.put("a", 1);
        Map<Object, Object> linked2 = new LinkedHashMap<>();
        linked2.put("k", list("v"));
        v.put("maps", new Object[] {one, numbered, new HashMap<>(), linked, tree, linked2});
        v.put("pojo", new Object[] {person()});
        Address shared = new Address("Paris", "75001");
        Person first = person();
        first.address = shared;
        Person second = person();
        second.name = "Bob";
        second.address = shared;
        List<Object> inner = list(1);
        List<Object> outer = list(inner, inner);
        v.put("shared_refs", new Object[] {outer, first, second, outer});
        Person self = person();
        self.friend = self;
        v.put("cycle", new Object[] {self});
        v.put("enums", new Object[] {Color.RED, Color.GREEN, Color.RED, list(Color.GREEN, Color.GREEN)});
        Object[] many = new Object[19];
        for (int i = 0; i < 18; i++) {
            many[i] = Many.instance(i);
        }
        many[18] = Many.instance(17);
        v.put("many_classes", many);
        v.put("big_decimals", new Object[] {new BigDecimal("0"), new BigDecimal("1.50"),
            new BigDecimal("-123.456"), new BigDecimal("1E+3"), new BigDecimal("1E-10"),
            new BigDecimal("12345678901234567890.123456789"), new BigDecimal("0.00")});
        // JDK value classes hessian-lite writes with its own serializers (handles); a generic
        // call's arguments declared as these are written the same way by the agent.
        v.put("jdk_types", new Object[] {
            java.time.Instant.ofEpochSecond(1700000000L, 123456789),
            java.time.Instant.ofEpochSecond(-1L, 0),
            java.time.LocalDate.of(2024, 2, 29),
            java.time.LocalTime.of(13, 45, 30, 5000),
            java.time.LocalTime.of(0, 0),
            java.time.LocalDateTime.of(2024, 2, 29, 13, 45, 30, 5000),
            java.time.OffsetDateTime.of(2024, 2, 29, 13, 45, 30, 0, java.time.ZoneOffset.ofHours(8)),
            java.time.OffsetTime.of(13, 45, 30, 0, java.time.ZoneOffset.ofHoursMinutes(-5, -30)),
            java.time.ZonedDateTime.of(2024, 2, 29, 13, 45, 30, 0, java.time.ZoneId.of("Asia/Shanghai")),
            java.time.ZoneId.of("Europe/Paris"),
            java.time.ZoneOffset.ofHours(8),
            java.time.Duration.ofSeconds(90061, 5),
            java.time.Duration.ofMillis(-500),
            java.time.Period.of(1, 2, 3),
            java.time.Year.of(2024),
            java.time.YearMonth.of(2024, 2),
            java.time.MonthDay.of(2, 29),
            java.util.Locale.forLanguageTag("zh-CN"),
            new java.util.Locale("en", "US", "POSIX"),
            java.util.Currency.getInstance("EUR"),
            java.net.URI.create("https://example.com/a%20b?c=d#e"),
            String.class,
            calendar(1700000000123L),
            new java.io.File("/tmp/a b.txt"),
            'x',
            new char[] {'a', 'b', '\u00e9'},
        });
        v.put("arrays", new Object[] {new boolean[] {true, false}, new short[] {1, -2},
            new int[] {1, -2}, new long[] {1L, 1L << 40}, new float[] {1.5f, -2f},
            new double[] {1.5, 2}, new Integer[] {1, null}, new Long[] {1L, null},
            new String[] {"a", null}, new Double[] {1.5}, new Boolean[] {true}});
        Map<Object, Object> attachments = new HashMap<>();
        attachments.put("path", "com.example.DemoService");
        v.put("dubbo_request", new Object[] {"2.0.2", "com.example.DemoService", "0.0.0", "sayHello",
            "Ljava/lang/String;", "world", attachments});
        return v;
    }

    static java.util.Calendar calendar(long millis) {
        java.util.Calendar calendar = new java.util.GregorianCalendar();
        calendar.setTimeInMillis(millis);
        return calendar;
    }

    static Person person() {
        Person p = new Person();
        p.name = "Alice \ud83d\ude00";
        p.age = 42;
        p.id = 7L;
        p.boxedId = 123456789012L;
        p.score = 99.5;
        p.active = true;
        p.address = new Address("Shanghai", "200000");
        p.tags = list("a", 1);
        p.color = Color.GREEN;
        p.balance = new BigDecimal("10.25");
        p.created = new Date(1700000000000L);
        Map<String, Object> attrs = new HashMap<>();
        attrs.put("k", 1L);
        p.attrs = attrs;
        p.avatar = bytes(20);
        return p;
    }

    static byte[] bytes(int length) {
        byte[] data = new byte[length];
        for (int i = 0; i < length; i++) {
            data[i] = (byte) (i * 31 + 7);
        }
        return data;
    }

    static List<Object> list(Object... items) {
        return new ArrayList<>(Arrays.asList(items));
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: HessianVectors write|check DIR");
            System.exit(2);
        }
        Path dir = Paths.get(args[1]);
        Map<String, Object[]> vectors = vectors();
        if (args[0].equals("echo")) {
            try (var files = Files.newDirectoryStream(dir, "*.in")) {
                for (Path file : files) {
                    String name = file.getFileName().toString().replaceAll("\\.in$", "");
                    Files.write(dir.resolve(name + ".out"), echo(Files.readAllBytes(file)));
                }
            }
            return;
        }
        if (args[0].equals("write")) {
            Files.createDirectories(dir);
            for (Map.Entry<String, Object[]> entry : vectors.entrySet()) {
                Files.write(dir.resolve(entry.getKey() + ".bin"), write(entry.getValue()));
            }
            return;
        }
        int failures = 0;
        for (Map.Entry<String, Object[]> entry : vectors.entrySet()) {
            String name = entry.getKey();
            String problem;
            try {
                problem = check(entry.getValue(), Files.readAllBytes(dir.resolve(name + ".bin")));
            } catch (Exception e) {
                problem = e.toString();
            }
            if (problem == null) {
                System.out.println("PASS " + name);
            } else {
                failures++;
                System.out.println("FAIL " + name + ": " + problem);
            }
        }
        System.exit(failures == 0 ? 0 : 1);
    }

    static byte[] write(Object[] values) throws IOException {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        Hessian2Output out = new Hessian2Output(bytes);
        for (Object value : values) {
            out.writeObject(value);
        }
        out.flush();
        return bytes.toByteArray();
    }

    static byte[] echo(byte[] framed) throws IOException {
        int count = ((framed[0] & 0xff) << 24) | ((framed[1] & 0xff) << 16)
            | ((framed[2] & 0xff) << 8) | (framed[3] & 0xff);
        Hessian2Input in = new Hessian2Input(
            new ByteArrayInputStream(framed, 4, framed.length - 4));
        Object[] values = new Object[count];
        for (int i = 0; i < count; i++) {
            values[i] = in.readObject();
        }
        return write(values);
    }

    static String check(Object[] expected, byte[] data) throws IOException {
        ByteArrayInputStream stream = new ByteArrayInputStream(data);
        Hessian2Input in = new Hessian2Input(stream);
        Graph graph = new Graph();
        for (int i = 0; i < expected.length; i++) {
            Object actual = in.readObject();
            String problem = graph.diff(expected[i], actual, "[" + i + "]");
            if (problem != null) {
                return problem;
            }
        }
        if (in.read() != -1) {
            return "bytes left after " + expected.length + " values";
        }
        return null;
    }

    /** Deep equality that also requires the same sharing (and cycles) on both sides. */
    static final class Graph {
        private final IdentityHashMap<Object, Object> forward = new IdentityHashMap<>();
        private final IdentityHashMap<Object, Object> backward = new IdentityHashMap<>();

        String diff(Object e, Object a, String path) {
            if (e == null || a == null) {
                return e == a ? null : path + ": expected " + e + ", got " + a;
            }
            if ((e instanceof Character || e instanceof char[]) && a instanceof String) {
                // hessian writes char and char[] as strings; read untyped they are Strings
                // (a method's declared char or char[] reads them back as such).
                String text = e instanceof Character ? e.toString() : new String((char[]) e);
                return text.equals(a) ? null : path + ": expected " + text + ", got " + a;
            }
            if (!e.getClass().equals(a.getClass())) {
                return path + ": expected a " + e.getClass().getName() + ", got a "
                    + a.getClass().getName() + " (" + a + ")";
            }
            if (e instanceof Number || e instanceof String || e instanceof Boolean
                    || e instanceof Date || e instanceof Enum || e instanceof Character
                    || e instanceof Class || isJdkValue(e)) {
                return e.equals(a) ? null : path + ": expected " + e + ", got " + a;
            }
            if (e.getClass().isArray() && e.getClass().getComponentType().isPrimitive()) {
                return Arrays.deepEquals(new Object[] {e}, new Object[] {a}) ? null
                    : path + ": arrays differ";
            }
            Object seen = forward.get(e);
            if (seen != null || backward.containsKey(a)) {
                return seen == a ? null : path + ": reference sharing differs";
            }
            forward.put(e, a);
            backward.put(a, e);
            if (e instanceof Object[]) {
                return items(Arrays.asList((Object[]) e), Arrays.asList((Object[]) a), path);
            }
            if (e instanceof Collection) {
                return items((Collection<?>) e, (Collection<?>) a, path);
            }
            if (e instanceof Map) {
                Map<?, ?> em = (Map<?, ?>) e;
                Map<?, ?> am = (Map<?, ?>) a;
                if (!(e instanceof HashMap) || e instanceof LinkedHashMap) {
                    String order = items(em.keySet(), am.keySet(), path + ".keys");
                    if (order != null) {
                        return order;
                    }
                }
                if (em.size() != am.size() || !em.keySet().equals(am.keySet())) {
                    return path + ": keys " + em.keySet() + " vs " + am.keySet();
                }
                for (Map.Entry<?, ?> entry : em.entrySet()) {
                    String problem = diff(entry.getValue(), am.get(entry.getKey()),
                        path + "[" + entry.getKey() + "]");
                    if (problem != null) {
                        return problem;
                    }
                }
                return null;
            }
            for (Class<?> cl = e.getClass(); cl != null; cl = cl.getSuperclass()) {
                for (Field field : cl.getDeclaredFields()) {
                    if (Modifier.isStatic(field.getModifiers())) {
                        continue;
                    }
                    field.setAccessible(true);
                    try {
                        String problem = diff(field.get(e), field.get(a), path + "." + field.getName());
                        if (problem != null) {
                            return problem;
                        }
                    } catch (IllegalAccessException ex) {
                        return path + ": " + ex;
                    }
                }
            }
            return null;
        }

        /** java.time and the other JDK values: their fields are closed to reflection. */
        private static boolean isJdkValue(Object e) {
            String name = e.getClass().getName();
            return (name.startsWith("java.time.") || name.startsWith("java.util.Locale")
                || name.startsWith("java.util.Currency") || name.startsWith("java.net.")
                || name.startsWith("java.io.File") || name.equals("java.util.GregorianCalendar"));
        }

        private String items(Collection<?> e, Collection<?> a, String path) {
            if (e.size() != a.size()) {
                return path + ": expected " + e.size() + " items, got " + a.size();
            }
            Iterator<?> ai = a.iterator();
            int i = 0;
            for (Object item : e) {
                String problem = diff(item, ai.next(), path + "[" + i++ + "]");
                if (problem != null) {
                    return problem;
                }
            }
            return null;
        }
    }
}
