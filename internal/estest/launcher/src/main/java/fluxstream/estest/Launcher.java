// Launcher starts one OpenSearch 2.19 node inside this JVM for fluxstream's
// tests: HTTP on 127.0.0.1 only, a single-node cluster, no security plugin,
// data under -home. When the node answers HTTP it writes a JSON line to the
// -ready file (written to a temporary name, then renamed):
//
//   {"pid":123,"http":"127.0.0.1:41234","version":"2.19.1","startup_ms":5230}
//
// It stops (closing the node) on SIGTERM, when stdin reaches EOF if -stdin is
// given, or when -leases names a directory and no file in it names a live
// process id any more (checked every second after the first lease appeared,
// or after 60 s if none ever did). So a test process that dies by SIGKILL
// cannot leave a node behind for long.
package fluxstream.estest;

import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.codelibs.opensearch.runner.node.OpenSearchRunnerNode;
import org.opensearch.Version;
import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.http.HttpServerTransport;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;

public final class Launcher {
    private Launcher() {}

    public static void main(String[] args) throws Exception {
        String home = null, ready = null, leases = null, httpPort = "0";
        boolean watchStdin = false;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "-home": home = args[++i]; break;
                case "-ready": ready = args[++i]; break;
                case "-leases": leases = args[++i]; break;
                case "-http-port": httpPort = args[++i]; break;
                case "-stdin": watchStdin = true; break;
                default:
                    System.err.println("usage: Launcher -home DIR [-ready FILE] [-http-port N] [-leases DIR] [-stdin]");
                    System.exit(2);
            }
        }
        if (home == null) {
            System.err.println("-home is required");
            System.exit(2);
        }
        long t0 = System.nanoTime();
        Path homePath = Paths.get(home).toAbsolutePath();
        Files.createDirectories(homePath.resolve("config"));
        Files.createDirectories(homePath.resolve("data"));
        Files.createDirectories(homePath.resolve("logs"));

        Settings settings = Settings.builder()
            .put("cluster.name", "fluxstream-test")
            .put("node.name", "estest")
            .put("path.home", homePath.toString())
            .put("path.data", homePath.resolve("data").toString())
            .put("path.logs", homePath.resolve("logs").toString())
            .put("network.host", "127.0.0.1")
            .put("http.port", httpPort)
            .put("transport.port", "0")
            .put("discovery.type", "single-node")
            .put("bootstrap.memory_lock", false)
            // A nearly full /tmp must not turn the test indices read-only.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("action.auto_create_index", true)
            .build();
        LogConfigurator.registerErrorListener();
        LogConfigurator.configureWithoutConfig(settings);
        Environment env = InternalSettingsPreparer.prepareEnvironment(
            settings, Collections.emptyMap(), homePath.resolve("config"), () -> "estest");

        Collection<Class<? extends Plugin>> plugins = List.of(
            org.opensearch.transport.Netty4Plugin.class,
            org.opensearch.painless.PainlessPlugin.class,
            org.opensearch.index.mapper.MapperExtrasPlugin.class,
            org.opensearch.analysis.common.CommonAnalysisPlugin.class);
        Node node = new OpenSearchRunnerNode(env, plugins);
        node.start();
        CountDownLatch stop = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            }
        }));

        String http = node.injector().getInstance(HttpServerTransport.class)
            .boundAddress().publishAddress().toString();
        long ms = (System.nanoTime() - t0) / 1_000_000;
        String line = String.format(
            "{\"pid\":%d,\"http\":\"%s\",\"version\":\"%s\",\"startup_ms\":%d}%n",
            ProcessHandle.current().pid(), http, Version.CURRENT, ms);
        System.out.print(line);
        System.out.flush();
        if (ready != null) {
            Path r = Paths.get(ready);
            Path tmp = r.resolveSibling(r.getFileName() + ".tmp");
            Files.write(tmp, line.getBytes(StandardCharsets.UTF_8));
            Files.move(tmp, r, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        }

        if (watchStdin) {
            Thread t = new Thread(() -> {
                try {
                    InputStream in = System.in;
                    while (in.read() >= 0) {
                        // keep reading until EOF
                    }
                } catch (Exception e) {
                    // treat as EOF
                }
                stop.countDown();
            }, "stdin-watch");
            t.setDaemon(true);
            t.start();
        }
        if (leases != null) {
            Path dir = Paths.get(leases);
            Thread t = new Thread(() -> watchLeases(dir, stop), "lease-watch");
            t.setDaemon(true);
            t.start();
        }
        stop.await();
        System.exit(0); // runs the shutdown hook, which closes the node
    }

    // watchLeases counts down stop once no file in dir names a live process.
    private static void watchLeases(Path dir, CountDownLatch stop) {
        long start = System.nanoTime();
        boolean seen = false;
        int emptyChecks = 0;
        while (true) {
            int live = 0;
            try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir)) {
                for (Path p : ds) {
                    String name = p.getFileName().toString();
                    try {
                        long pid = Long.parseLong(name);
                        if (ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false)) {
                            live++;
                        }
                    } catch (NumberFormatException e) {
                        // not a lease
                    }
                }
            } catch (Exception e) {
                // directory gone: nobody holds a lease
            }
            if (live > 0) {
                seen = true;
                emptyChecks = 0;
            } else if (seen || System.nanoTime() - start > TimeUnit.SECONDS.toNanos(60)) {
                if (++emptyChecks >= 2) {
                    stop.countDown();
                    return;
                }
            }
            try {
                Thread.sleep(1000);
            } catch (InterruptedException e) {
                return;
            }
        }
    }
}
