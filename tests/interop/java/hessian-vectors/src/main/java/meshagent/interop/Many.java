package meshagent.interop;

import java.io.Serializable;

/** Eighteen classes, so a stream holds more than 16 class definitions (the 'O' form). */
public final class Many {
    private Many() {
    }

    static Object instance(int index) throws ReflectiveOperationException {
        Class<?> cl = Class.forName(Many.class.getName() + "$K" + index);
        Object value = cl.getDeclaredConstructor().newInstance();
        cl.getDeclaredField("v").setInt(value, index);
        return value;
    }

    public static class K0 implements Serializable { int v; }
    public static class K1 implements Serializable { int v; }
    public static class K2 implements Serializable { int v; }
    public static class K3 implements Serializable { int v; }
    public static class K4 implements Serializable { int v; }
    public static class K5 implements Serializable { int v; }
    public static class K6 implements Serializable { int v; }
    public static class K7 implements Serializable { int v; }
    public static class K8 implements Serializable { int v; }
    public static class K9 implements Serializable { int v; }
    public static class K10 implements Serializable { int v; }
    public static class K11 implements Serializable { int v; }
    public static class K12 implements Serializable { int v; }
    public static class K13 implements Serializable { int v; }
    public static class K14 implements Serializable { int v; }
    public static class K15 implements Serializable { int v; }
    public static class K16 implements Serializable { int v; }
    public static class K17 implements Serializable { int v; }
}
