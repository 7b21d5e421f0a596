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
}
