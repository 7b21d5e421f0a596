package org.meshagent.interop.consumer;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.Arrays;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicReference;
import org.meshagent.interop.Args;
import org.meshagent.interop.api.GreetingService;
import org.apache.dubbo.rpc.service.GenericService;

/** N threads call echo(payload) back to back for D seconds after a warm-up; one JSON line out. */
final class Bench {
    private Bench() {
    }

    static int run(Args args, ConsumerMain.Invoker invoker, boolean generic) throws Exception {
        int threads = args.getInt("threads", 8);
        double duration = args.getDouble("duration", 5);
        double warmup = args.getDouble("warmup", 1);
        String payload = "x".repeat(args.getInt("payload", 16));
        String[] types = {"java.lang.String"};

        GreetingService stub = generic ? null : ((ConsumerMain.StubInvoker) invoker).stub();
        GenericService gs = generic ? ((ConsumerMain.GenericInvoker) invoker).generic() : null;

        long now = System.nanoTime();
        long measureFrom = now + (long) (warmup * 1e9);
        long measureTo = measureFrom + (long) (duration * 1e9);
        long[][] samples = new long[threads][];
        int[] counts = new int[threads];
        long[] errors = new long[threads];
        AtomicReference<String> firstError = new AtomicReference<>();
        CountDownLatch done = new CountDownLatch(threads);
        for (int t = 0; t < threads; t++) {
            final int idx = t;
            Thread th = new Thread(() -> {
                long[] lat = new long[1 << 16];
                int n = 0;
                try {
                    while (true) {
                        long t0 = System.nanoTime();
                        if (t0 >= measureTo) {
                            break;
                        }
                        boolean ok;
                        try {
                            Object r = generic ? gs.$invoke("echo", types, new Object[] {payload}) : stub.echo(payload);
                            ok = payload.equals(r);
                            if (!ok) {
                                firstError.compareAndSet(null, "wrong echo: " + r);
                            }
                        } catch (RuntimeException e) {
                            ok = false;
                            firstError.compareAndSet(null, e.getClass().getName() + ": " + e.getMessage());
                        }
                        long t1 = System.nanoTime();
                        if (t0 >= measureFrom) {
                            if (ok) {
                                if (n == lat.length) {
                                    lat = Arrays.copyOf(lat, n * 2);
                                }
                                lat[n++] = t1 - t0;
                            } else {
                                errors[idx]++;
                            }
                        }
                    }
                } finally {
                    samples[idx] = lat;
                    counts[idx] = n;
                    done.countDown();
                }
            }, "bench-" + t);
            th.setDaemon(true);
            th.start();
        }
        done.await();

        int total = 0;
        for (int c : counts) {
            total += c;
        }
        long[] all = new long[total];
        int pos = 0;
        long errs = 0;
        for (int t = 0; t < threads; t++) {
            System.arraycopy(samples[t], 0, all, pos, counts[t]);
            pos += counts[t];
            errs += errors[t];
        }
        Arrays.sort(all);
        ObjectNode out = ConsumerMain.JSON.createObjectNode();
        out.put("mode", "bench");
        out.put("api", generic ? "generic" : "stub");
        out.put("target", args.get("url", args.get("registry", args.get("zk", ""))));
        out.put("threads", threads);
        out.put("duration_s", duration);
        out.put("payload_bytes", payload.length());
        out.put("calls", total);
        out.put("errors", errs);
        out.put("calls_per_s", Math.round(total / duration * 10) / 10.0);
        out.put("p50_us", pct(all, 0.50));
        out.put("p90_us", pct(all, 0.90));
        out.put("p99_us", pct(all, 0.99));
        out.put("max_us", total == 0 ? 0 : all[total - 1] / 1000);
        if (firstError.get() != null) {
            out.put("first_error", firstError.get());
        }
        System.out.println(ConsumerMain.JSON.writeValueAsString(out));
        System.out.flush();
        return total > 0 ? 0 : 4;
    }

    private static long pct(long[] sorted, double q) {
        if (sorted.length == 0) {
            return 0;
        }
        int i = (int) Math.ceil(q * sorted.length) - 1;
        return sorted[Math.max(0, Math.min(sorted.length - 1, i))] / 1000;
    }
}
