package org.meshagent.interop;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Tiny option parser: {@code --key value} or {@code --key=value}; anything else is positional.
 * An option not on the command line falls back to the system property {@code peer.<key>}.
 */
public final class Args {
    private final Map<String, String> options = new HashMap<>();
    private final List<String> positional = new ArrayList<>();

    public Args(String[] argv) {
        for (int i = 0; i < argv.length; i++) {
            String a = argv[i];
            if (a.startsWith("--")) {
                String body = a.substring(2);
                int eq = body.indexOf('=');
                if (eq >= 0) {
                    options.put(body.substring(0, eq), body.substring(eq + 1));
                } else if (i + 1 < argv.length && !argv[i + 1].startsWith("--")) {
                    options.put(body, argv[++i]);
                } else {
                    options.put(body, "true");
                }
            } else {
                positional.add(a);
            }
        }
    }

    public List<String> positional() {
        return positional;
    }

    public String get(String key, String def) {
        String v = options.get(key);
        if (v == null) {
            v = System.getProperty("peer." + key);
        }
        return v == null || v.isEmpty() ? def : v;
    }

    public int getInt(String key, int def) {
        String v = get(key, null);
        return v == null ? def : Integer.parseInt(v);
    }

    public double getDouble(String key, double def) {
        String v = get(key, null);
        return v == null ? def : Double.parseDouble(v);
    }

    public boolean getBool(String key, boolean def) {
        String v = get(key, null);
        return v == null ? def : Boolean.parseBoolean(v);
    }
}
