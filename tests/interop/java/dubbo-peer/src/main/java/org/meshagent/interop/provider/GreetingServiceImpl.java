package org.meshagent.interop.provider;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.sql.Timestamp;
import java.util.ArrayList;
import java.util.Date;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.dubbo.rpc.RpcContext;
import org.meshagent.interop.api.Address;
import org.meshagent.interop.api.GreetingException;
import org.meshagent.interop.api.GreetingService;
import org.meshagent.interop.api.Level;
import org.meshagent.interop.api.Person;

public final class GreetingServiceImpl implements GreetingService {
    private final String id;
    private final AtomicInteger recorded = new AtomicInteger();

    public GreetingServiceImpl(String id) {
        this.id = id;
    }

    @Override
    public String echo(String message) {
        return message;
    }

    @Override
    public String whoami() {
        return id;
    }

    @Override
    public Map<String, String> attachments() {
        Map<String, String> seen = new LinkedHashMap<>(RpcContext.getServerAttachment().getAttachments());
        for (Map.Entry<String, String> entry : seen.entrySet()) {
            RpcContext.getServerContext().setAttachment("seen." + entry.getKey(), entry.getValue());
        }
        return seen;
    }

    @Override
    public String greet(String name) {
        return "Hello, " + name;
    }

    @Override
    public int addInt(int a, int b) {
        return a + b;
    }

    @Override
    public long addLong(long a, long b) {
        return a + b;
    }

    @Override
    public double multiply(double a, double b) {
        return a * b;
    }

    @Override
    public boolean negate(boolean value) {
        return !value;
    }

    @Override
    public List<Person> listPeople(int count) {
        List<Person> people = new ArrayList<>(count);
        for (int i = 0; i < count; i++) {
            Person p = new Person("person-" + i, 20 + i);
            p.setAddress(new Address(i + " Main St", "Springfield", 10000 + i));
            p.setTags(new ArrayList<>(List.of("t" + i)));
            p.setLevel(Level.values()[i % Level.values().length]);
            people.add(p);
        }
        return people;
    }

    @Override
    public Map<String, Object> echoMap(Map<String, Object> map) {
        Map<String, Object> out = new LinkedHashMap<>();
        if (map != null) {
            out.putAll(map);
        }
        out.put("echoed", Boolean.TRUE);
        out.put("size", map == null ? 0 : map.size());
        return out;
    }

    @Override
    public Person echoPerson(Person person) {
        if (person == null) {
            return null;
        }
        person.setAge(person.getAge() + 1);
        List<String> tags = person.getTags() == null ? new ArrayList<>() : new ArrayList<>(person.getTags());
        tags.add("seen");
        person.setTags(tags);
        return person;
    }

    @Override
    public Level nextLevel(Level level) {
        Level[] all = Level.values();
        return all[(level.ordinal() + 1) % all.length];
    }

    @Override
    public Date addDays(Date date, int days) {
        return new Date(date.getTime() + TimeUnit.DAYS.toMillis(days));
    }

    @Override
    public BigDecimal addDecimal(BigDecimal a, BigDecimal b) {
        return a.add(b);
    }

    @Override
    public Timestamp laterBy(Timestamp at, long millis) {
        return new Timestamp(at.getTime() + millis);
    }

    @Override
    public BigInteger doubled(BigInteger value) {
        return value == null ? null : value.shiftLeft(1);
    }

    @Override
    public UUID nextUuid(UUID id) {
        return new UUID(id.getMostSignificantBits(), id.getLeastSignificantBits() + 1);
    }

    @Override
    public void record(String event) {
        recorded.incrementAndGet();
    }

    @Override
    public int recordedCount() {
        return recorded.get();
    }

    @Override
    public String describe(String value) {
        return "string:" + value;
    }

    @Override
    public String describe(int value) {
        return "int:" + value;
    }

    @Override
    public String describe(Person person) {
        return "person:" + (person == null ? null : person.getName());
    }

    @Override
    public String describe(String value, int times) {
        return "string:" + value + "*" + times;
    }

    @Override
    public String fail(String message) throws GreetingException {
        throw new GreetingException(message);
    }

    @Override
    public String slow(int millis) {
        try {
            Thread.sleep(millis);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        return "slept " + millis;
    }

    @Override
    public java.time.Instant jdk(java.time.Instant value) {
        return value;
    }

    @Override
    public java.time.LocalDate jdk(java.time.LocalDate value) {
        return value;
    }

    @Override
    public java.time.LocalTime jdk(java.time.LocalTime value) {
        return value;
    }

    @Override
    public java.time.LocalDateTime jdk(java.time.LocalDateTime value) {
        return value;
    }

    @Override
    public java.time.OffsetDateTime jdk(java.time.OffsetDateTime value) {
        return value;
    }

    @Override
    public java.time.OffsetTime jdk(java.time.OffsetTime value) {
        return value;
    }

    @Override
    public java.time.ZonedDateTime jdk(java.time.ZonedDateTime value) {
        return value;
    }

    @Override
    public java.time.ZoneId jdk(java.time.ZoneId value) {
        return value;
    }

    @Override
    public java.time.ZoneOffset jdk(java.time.ZoneOffset value) {
        return value;
    }

    @Override
    public java.time.Duration jdk(java.time.Duration value) {
        return value;
    }

    @Override
    public java.time.Period jdk(java.time.Period value) {
        return value;
    }

    @Override
    public java.time.Year jdk(java.time.Year value) {
        return value;
    }

    @Override
    public java.time.YearMonth jdk(java.time.YearMonth value) {
        return value;
    }

    @Override
    public java.time.MonthDay jdk(java.time.MonthDay value) {
        return value;
    }

    @Override
    public java.util.Locale jdk(java.util.Locale value) {
        return value;
    }

    @Override
    public java.util.Currency jdk(java.util.Currency value) {
        return value;
    }

    @Override
    public java.net.URI jdk(java.net.URI value) {
        return value;
    }

    @Override
    public Class<?> jdk(Class<?> value) {
        return value;
    }

    @Override
    public char jdk(char value) {
        return value;
    }

    @Override
    public Character jdk(Character value) {
        return value;
    }

    @Override
    public char[] jdk(char[] value) {
        return value;
    }

    @Override
    public String jdkReceived(java.time.Instant value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(java.time.LocalDate value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(java.time.LocalTime value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(java.time.LocalDateTime value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(java.time.OffsetDateTime value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(java.time.OffsetTime value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(java.time.ZonedDateTime value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(java.time.ZoneId value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(java.time.ZoneOffset value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(java.time.Duration value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(java.time.Period value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(java.time.Year value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(java.time.YearMonth value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(java.time.MonthDay value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(java.util.Locale value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(java.util.Currency value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(java.net.URI value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(Class<?> value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(char value) {
        return "char " + value;
    }

    @Override
    public String jdkReceived(Character value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(char[] value) {
        return "char[] " + new String(value);
    }

    @Override
    public String jdkReceived(java.net.URL value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(java.net.InetAddress value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String jdkReceived(java.util.Optional<String> value) {
        return value == null ? "null" : value.getClass().getName() + " " + value;
    }

    @Override
    public String failWithCauses(String message) {
        throw failure(message);
    }

    @Override
    public RuntimeException failure(String message) {
        IllegalStateException failure = new IllegalStateException(
            message, new java.io.IOException("disk gone", new java.io.EOFException("at byte 7")));
        failure.addSuppressed(new IllegalArgumentException("cleanup failed"));
        return failure;
    }

    @Override
    public boolean[] jdk(boolean[] value) {
        return value;
    }

    @Override
    public String jdkReceived(boolean[] value) {
        return "boolean[] " + java.util.Arrays.toString(value);
    }

    @Override
    public short[] jdk(short[] value) {
        return value;
    }

    @Override
    public String jdkReceived(short[] value) {
        return "short[] " + java.util.Arrays.toString(value);
    }

    @Override
    public int[] jdk(int[] value) {
        return value;
    }

    @Override
    public String jdkReceived(int[] value) {
        return "int[] " + java.util.Arrays.toString(value);
    }

    @Override
    public long[] jdk(long[] value) {
        return value;
    }

    @Override
    public String jdkReceived(long[] value) {
        return "long[] " + java.util.Arrays.toString(value);
    }

    @Override
    public float[] jdk(float[] value) {
        return value;
    }

    @Override
    public String jdkReceived(float[] value) {
        return "float[] " + java.util.Arrays.toString(value);
    }

    @Override
    public double[] jdk(double[] value) {
        return value;
    }

    @Override
    public String jdkReceived(double[] value) {
        return "double[] " + java.util.Arrays.toString(value);
    }

    @Override
    public Integer[] jdk(Integer[] value) {
        return value;
    }

    @Override
    public String jdkReceived(Integer[] value) {
        return "Integer[] " + java.util.Arrays.toString(value);
    }

    @Override
    public Long[] jdk(Long[] value) {
        return value;
    }

    @Override
    public String jdkReceived(Long[] value) {
        return "Long[] " + java.util.Arrays.toString(value);
    }

    @Override
    public String[] jdk(String[] value) {
        return value;
    }

    @Override
    public String jdkReceived(String[] value) {
        return "String[] " + java.util.Arrays.toString(value);
    }

    @Override
    public Double[] jdk(Double[] value) {
        return value;
    }

    @Override
    public String jdkReceived(Double[] value) {
        return "Double[] " + java.util.Arrays.toString(value);
    }

    @Override
    public Boolean[] jdk(Boolean[] value) {
        return value;
    }

    @Override
    public String jdkReceived(Boolean[] value) {
        return "Boolean[] " + java.util.Arrays.toString(value);
    }

    @Override
    public java.util.Calendar jdk(java.util.Calendar value) {
        return value;
    }

    @Override
    public String jdkReceived(java.util.Calendar value) {
        return value.getClass().getName() + " " + value.toInstant();
    }

    @Override
    public java.io.File jdk(java.io.File value) {
        return value;
    }

    @Override
    public String jdkReceived(java.io.File value) {
        return value.getClass().getName() + " " + value.getPath();
    }
}
