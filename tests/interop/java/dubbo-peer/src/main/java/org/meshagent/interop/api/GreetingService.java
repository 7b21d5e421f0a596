package org.meshagent.interop.api;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.sql.Timestamp;
import java.util.Date;
import java.util.UUID;
import java.util.List;
import java.util.Map;

/**
 * The one interface the peer exports. It covers the hessian2 shapes meshagent's codec must get
 * right: primitives, strings, POJOs (flat and nested), lists, maps, an enum, Date, BigDecimal,
 * void, no-argument methods, overloads, a checked exception and a timeout.
 */
public interface GreetingService {

    /** Benchmark workhorse: returns its argument unchanged. */
    String echo(String message);

    /** Which provider answered: the id given on the provider's command line, or "host:port". */
    String whoami();

    /**
     * The attachments this call arrived with (what a consumer or an agent propagated: trace
     * context, hop count, timeout); they are also returned as the response's attachments,
     * prefixed "seen.".
     */
    Map<String, String> attachments();

    String greet(String name);

    int addInt(int a, int b);

    long addLong(long a, long b);

    double multiply(double a, double b);

    boolean negate(boolean value);

    /** A list of {@code count} people named person-0 .. person-(count-1). */
    List<Person> listPeople(int count);

    /** The same map plus "echoed": true and "size": the input's size. */
    Map<String, Object> echoMap(Map<String, Object> map);

    /** The same person, age + 1, tags + "seen"; nested Address kept. */
    Person echoPerson(Person person);

    /** The next level (wraps around). */
    Level nextLevel(Level level);

    Date addDays(Date date, int days);

    BigDecimal addDecimal(BigDecimal a, BigDecimal b);

    /** {@code at} plus {@code millis}, as a java.sql.Timestamp (hessian's SqlDateSerializer). */
    Timestamp laterBy(Timestamp at, long millis);

    /** Twice {@code value}; null for null. */
    BigInteger doubled(BigInteger value);

    /** The UUID after {@code id} (its low bits plus one). */
    UUID nextUuid(UUID id);

    /** Void: remembers the event; {@link #recordedCount()} tells how many were seen. */
    void record(String event);

    int recordedCount();

    // Overloads: same name, different parameter types. The wire carries the descriptor.
    String describe(String value);

    String describe(int value);

    String describe(Person person);

    String describe(String value, int times);

    /** Always throws {@link GreetingException} with {@code message}. */
    String fail(String message) throws GreetingException;

    /** Sleeps {@code millis}, then returns "slept N". Its timeout is configured to 500 ms. */
    String slow(int millis);

    // JDK value classes (tests/interop/test_dubbo_jdk_types.py): jdk returns what it got,
    // jdkReceived says what arrived (its class and toString).

    java.time.Instant jdk(java.time.Instant value);
    java.time.LocalDate jdk(java.time.LocalDate value);
    java.time.LocalTime jdk(java.time.LocalTime value);
    java.time.LocalDateTime jdk(java.time.LocalDateTime value);
    java.time.OffsetDateTime jdk(java.time.OffsetDateTime value);
    java.time.OffsetTime jdk(java.time.OffsetTime value);
    java.time.ZonedDateTime jdk(java.time.ZonedDateTime value);
    java.time.ZoneId jdk(java.time.ZoneId value);
    java.time.ZoneOffset jdk(java.time.ZoneOffset value);
    java.time.Duration jdk(java.time.Duration value);
    java.time.Period jdk(java.time.Period value);
    java.time.Year jdk(java.time.Year value);
    java.time.YearMonth jdk(java.time.YearMonth value);
    java.time.MonthDay jdk(java.time.MonthDay value);
    java.util.Locale jdk(java.util.Locale value);
    java.util.Currency jdk(java.util.Currency value);
    java.net.URI jdk(java.net.URI value);
    Class<?> jdk(Class<?> value);
    char jdk(char value);
    Character jdk(Character value);
    char[] jdk(char[] value);
    String jdkReceived(java.time.Instant value);
    String jdkReceived(java.time.LocalDate value);
    String jdkReceived(java.time.LocalTime value);
    String jdkReceived(java.time.LocalDateTime value);
    String jdkReceived(java.time.OffsetDateTime value);
    String jdkReceived(java.time.OffsetTime value);
    String jdkReceived(java.time.ZonedDateTime value);
    String jdkReceived(java.time.ZoneId value);
    String jdkReceived(java.time.ZoneOffset value);
    String jdkReceived(java.time.Duration value);
    String jdkReceived(java.time.Period value);
    String jdkReceived(java.time.Year value);
    String jdkReceived(java.time.YearMonth value);
    String jdkReceived(java.time.MonthDay value);
    String jdkReceived(java.util.Locale value);
    String jdkReceived(java.util.Currency value);
    String jdkReceived(java.net.URI value);
    String jdkReceived(Class<?> value);
    String jdkReceived(char value);
    String jdkReceived(Character value);
    String jdkReceived(char[] value);
    String jdkReceived(java.net.URL value);
    String jdkReceived(java.net.InetAddress value);
    String jdkReceived(java.util.Optional<String> value);

    // Throws IllegalStateException(message) caused by an IOException caused by an
    // EOFException, with an IllegalArgumentException suppressed.
    String failWithCauses(String message);

    // Returns (not throws) the exception failWithCauses throws.
    RuntimeException failure(String message);

    // Arrays of every primitive and boxed kind (jdkReceived: the kind and Arrays.toString).
    boolean[] jdk(boolean[] value);
    String jdkReceived(boolean[] value);
    short[] jdk(short[] value);
    String jdkReceived(short[] value);
    int[] jdk(int[] value);
    String jdkReceived(int[] value);
    long[] jdk(long[] value);
    String jdkReceived(long[] value);
    float[] jdk(float[] value);
    String jdkReceived(float[] value);
    double[] jdk(double[] value);
    String jdkReceived(double[] value);
    Integer[] jdk(Integer[] value);
    String jdkReceived(Integer[] value);
    Long[] jdk(Long[] value);
    String jdkReceived(Long[] value);
    String[] jdk(String[] value);
    String jdkReceived(String[] value);
    Double[] jdk(Double[] value);
    String jdkReceived(Double[] value);
    Boolean[] jdk(Boolean[] value);
    String jdkReceived(Boolean[] value);

    java.util.Calendar jdk(java.util.Calendar value);

    String jdkReceived(java.util.Calendar value);

    java.io.File jdk(java.io.File value);

    String jdkReceived(java.io.File value);
}
