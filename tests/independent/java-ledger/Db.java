import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.Socket;
import java.net.SocketAddress;
import java.net.StandardProtocolFamily;
import java.net.URLDecoder;
import java.net.URLEncoder;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.Semaphore;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;

/** PostgreSQL access: DATABASE_URL parsing, a bounded connection pool, transactions with retries. */
final class Db {

    // ================================================================ DATABASE_URL -> JDBC

    static final class Config {
        String jdbcUrl;
        final Properties props = new Properties();
        String describe; // for the log, without the password
    }

    static final class BadUrl extends Exception {
        BadUrl(String m) { super(m); }
    }

    /**
     * Converts a libpq-style URL ({@code postgres://user:pass@host:port/db?sslmode=disable},
     * {@code postgresql:///db?host=/var/run/postgresql}) into a JDBC URL plus properties.
     * A {@code jdbc:postgresql:} URL is passed through.
     */
    static Config parseUrl(String url) throws BadUrl {
        if (url == null || url.isBlank()) throw new BadUrl("DATABASE_URL is not set");
        url = url.trim();
        Config cfg = new Config();
        if (url.startsWith("jdbc:postgresql:")) {
            cfg.jdbcUrl = url;
            cfg.describe = url.replaceAll("password=[^&]*", "password=***");
            return cfg;
        }
        String rest;
        if (url.startsWith("postgres://")) rest = url.substring("postgres://".length());
        else if (url.startsWith("postgresql://")) rest = url.substring("postgresql://".length());
        else throw new BadUrl("DATABASE_URL must start with postgres:// or postgresql:// (got '" + redact(url) + "')");

        String query = "";
        int q = rest.indexOf('?');
        if (q >= 0) { query = rest.substring(q + 1); rest = rest.substring(0, q); }
        String path = "";
        int slash = rest.indexOf('/');
        if (slash >= 0) { path = rest.substring(slash + 1); rest = rest.substring(0, slash); }
        String user = null, password = null;
        int at = rest.lastIndexOf('@');
        if (at >= 0) {
            String userinfo = rest.substring(0, at);
            rest = rest.substring(at + 1);
            int colon = userinfo.indexOf(':');
            if (colon >= 0) { user = dec(userinfo.substring(0, colon)); password = dec(userinfo.substring(colon + 1)); }
            else user = dec(userinfo);
        }
        String dbname = path.isEmpty() ? null : dec(path);

        // host list: h1:p1,h2:p2 or [v6]:p
        List<String> hosts = new ArrayList<>();
        List<String> ports = new ArrayList<>();
        if (!rest.isEmpty()) {
            for (String hp : rest.split(",")) {
                String h, p = null;
                if (hp.startsWith("[")) {
                    int close = hp.indexOf(']');
                    if (close < 0) throw new BadUrl("DATABASE_URL: unterminated IPv6 address '" + hp + "'");
                    h = hp.substring(0, close + 1);
                    String after = hp.substring(close + 1);
                    if (after.startsWith(":")) p = after.substring(1);
                    else if (!after.isEmpty()) throw new BadUrl("DATABASE_URL: cannot parse host '" + hp + "'");
                } else {
                    int colon = hp.lastIndexOf(':');
                    if (colon >= 0) { h = dec(hp.substring(0, colon)); p = hp.substring(colon + 1); }
                    else h = dec(hp);
                }
                hosts.add(h);
                ports.add(p == null || p.isEmpty() ? null : p);
            }
        }

        String socketDir = null;
        String sslmode = null;
        String portParam = null;
        for (String kv : query.isEmpty() ? new String[0] : query.split("&")) {
            if (kv.isEmpty()) continue;
            int eq = kv.indexOf('=');
            String k = dec(eq < 0 ? kv : kv.substring(0, eq));
            String v = eq < 0 ? "" : dec(kv.substring(eq + 1));
            switch (k) {
                case "host":
                    if (v.startsWith("/")) socketDir = v;
                    else { hosts.clear(); ports.clear(); for (String h : v.split(",")) { hosts.add(h); ports.add(null); } }
                    break;
                case "port": portParam = v; break;
                case "user": user = v; break;
                case "password": password = v; break;
                case "dbname": dbname = v; break;
                case "sslmode": sslmode = v; break;
                case "application_name": cfg.props.setProperty("ApplicationName", v); break;
                case "connect_timeout": cfg.props.setProperty("connectTimeout", v); break;
                case "options": cfg.props.setProperty("options", v); break;
                default:
                    System.err.println("DATABASE_URL: ignoring unsupported parameter '" + k + "'");
            }
        }
        if (portParam != null) {
            if (ports.isEmpty()) ports.add(portParam);
            else for (int k = 0; k < ports.size(); k++) ports.set(k, portParam);
        }
        for (String p : ports) {
            if (p != null && !p.matches("[0-9]{1,5}")) throw new BadUrl("DATABASE_URL: port '" + p + "' is not a number");
        }
        if (hosts.size() == 1 && hosts.get(0).startsWith("/")) { socketDir = hosts.get(0); hosts.clear(); }
        if (hosts.isEmpty() && socketDir == null) {
            // libpq's default is the local socket directory
            for (String d : new String[] {"/var/run/postgresql", "/tmp"}) {
                if (new File(d).isDirectory()) { socketDir = d; break; }
            }
            if (socketDir == null) hosts.add("localhost");
        }
        if (user == null) user = System.getProperty("user.name");
        if (dbname == null) dbname = user;

        String dbPart = URLEncoder.encode(dbname, StandardCharsets.UTF_8);
        if (socketDir != null && hosts.isEmpty()) {
            String port = ports.isEmpty() || ports.get(0) == null ? "5432" : ports.get(0);
            String sock = socketDir + "/.s.PGSQL." + port;
            cfg.jdbcUrl = "jdbc:postgresql://localhost:" + port + "/" + dbPart;
            cfg.props.setProperty("socketFactory", UnixSocketFactory.class.getName());
            cfg.props.setProperty("socketFactoryArg", sock);
            cfg.props.setProperty("sslmode", "disable");
            cfg.describe = "unix socket " + sock + " db=" + dbname + " user=" + user;
        } else {
            StringBuilder hp = new StringBuilder();
            for (int k = 0; k < hosts.size(); k++) {
                if (k > 0) hp.append(',');
                hp.append(hosts.get(k));
                String p = k < ports.size() ? ports.get(k) : null;
                hp.append(':').append(p == null ? "5432" : p);
            }
            cfg.jdbcUrl = "jdbc:postgresql://" + hp + "/" + dbPart;
            if (sslmode != null) cfg.props.setProperty("sslmode", sslmode);
            cfg.describe = cfg.jdbcUrl + " user=" + user;
        }
        cfg.props.setProperty("user", user);
        if (password != null) cfg.props.setProperty("password", password);
        cfg.props.putIfAbsent("connectTimeout", "10");
        cfg.props.setProperty("tcpKeepAlive", "true");
        cfg.props.putIfAbsent("ApplicationName", "java-ledger");
        return cfg;
    }

    private static String dec(String s) throws BadUrl {
        try {
            return URLDecoder.decode(s.replace("+", "%2B"), StandardCharsets.UTF_8);
        } catch (IllegalArgumentException e) {
            throw new BadUrl("DATABASE_URL: bad percent-encoding in '" + s + "'");
        }
    }

    private static String redact(String url) {
        return url.replaceAll("://([^:/@]*):[^@]*@", "://$1:***@");
    }

    // ================================================================ Unix-domain sockets for pgjdbc

    /** pgjdbc {@code socketFactory}: connects to the socket file given as {@code socketFactoryArg}. */
    public static final class UnixSocketFactory extends javax.net.SocketFactory {
        private final String path;
        public UnixSocketFactory(String path) { this.path = path; }
        @Override public Socket createSocket() { return new UnixSocket(path); }
        @Override public Socket createSocket(String h, int p) throws IOException { Socket s = createSocket(); s.connect(null); return s; }
        @Override public Socket createSocket(String h, int p, InetAddress la, int lp) throws IOException { return createSocket(h, p); }
        @Override public Socket createSocket(InetAddress h, int p) throws IOException { return createSocket("", p); }
        @Override public Socket createSocket(InetAddress h, int p, InetAddress la, int lp) throws IOException { return createSocket("", p); }
    }

    /** Just enough of java.net.Socket over a Unix-domain SocketChannel for pgjdbc. */
    static final class UnixSocket extends Socket {
        private final String path;
        private SocketChannel ch;
        private InputStream in;
        private OutputStream out;
        private volatile boolean closed;
        private int soTimeout;

        UnixSocket(String path) { this.path = path; }

        @Override public void connect(SocketAddress ignored) throws IOException { connect(ignored, 0); }
        @Override public void connect(SocketAddress ignored, int timeout) throws IOException {
            SocketChannel c = SocketChannel.open(StandardProtocolFamily.UNIX);
            try {
                c.connect(UnixDomainSocketAddress.of(path));
            } catch (IOException e) {
                c.close();
                throw new IOException("cannot connect to unix socket " + path + ": " + e.getMessage(), e);
            }
            ch = c;
            in = Channels.newInputStream(c);
            out = Channels.newOutputStream(c);
        }
        @Override public boolean isConnected() { return ch != null && ch.isConnected(); }
        @Override public boolean isBound() { return ch != null; }
        @Override public boolean isClosed() { return closed; }
        @Override public InputStream getInputStream() throws IOException { if (in == null) throw new IOException("not connected"); return in; }
        @Override public OutputStream getOutputStream() throws IOException { if (out == null) throw new IOException("not connected"); return out; }
        @Override public synchronized void close() throws IOException { closed = true; if (ch != null) ch.close(); }
        @Override public void shutdownInput() throws IOException { if (ch != null) ch.shutdownInput(); }
        @Override public void shutdownOutput() throws IOException { if (ch != null) ch.shutdownOutput(); }
        @Override public void setTcpNoDelay(boolean on) {}
        @Override public boolean getTcpNoDelay() { return false; }
        @Override public void setKeepAlive(boolean on) {}
        @Override public boolean getKeepAlive() { return false; }
        @Override public synchronized void setSoTimeout(int t) { soTimeout = t; } // not enforced on a channel stream
        @Override public synchronized int getSoTimeout() { return soTimeout; }
        @Override public void setReceiveBufferSize(int size) {}
        @Override public void setSendBufferSize(int size) {}
        @Override public int getReceiveBufferSize() { return 65536; }
        @Override public int getSendBufferSize() { return 65536; }
        @Override public void setSoLinger(boolean on, int linger) {}
        @Override public int getSoLinger() { return -1; }
        @Override public InetAddress getInetAddress() { return InetAddress.getLoopbackAddress(); }
        @Override public InetAddress getLocalAddress() { return InetAddress.getLoopbackAddress(); }
        @Override public int getPort() { return 0; }
        @Override public int getLocalPort() { return 0; }
        @Override public String toString() { return "UnixSocket[" + path + "]"; }
    }

    // ================================================================ pool

    private final Config cfg;
    private final BlockingQueue<Connection> idle;
    private final Semaphore permits;
    private final int size;

    Db(Config cfg, int size) {
        this.cfg = cfg;
        this.size = size;
        this.idle = new ArrayBlockingQueue<>(size);
        this.permits = new Semaphore(size, true);
    }

    int size() { return size; }

    /** Thrown when no connection frees up in time: the service is overloaded, answer 503. */
    static final class PoolTimeout extends Exception {
        PoolTimeout() { super("no database connection available"); }
    }

    Connection borrow() throws SQLException, PoolTimeout {
        try {
            if (!permits.tryAcquire(15, TimeUnit.SECONDS)) throw new PoolTimeout();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new PoolTimeout();
        }
        Connection c = idle.poll();
        try {
            if (c != null && c.isClosed()) c = null;
            if (c == null) c = DriverManager.getConnection(cfg.jdbcUrl, cfg.props);
            return c;
        } catch (SQLException | RuntimeException e) {
            permits.release();
            throw e;
        }
    }

    void release(Connection c, boolean broken) {
        try {
            if (broken || c.isClosed()) {
                try { c.close(); } catch (SQLException ignored) {}
            } else {
                if (!c.getAutoCommit()) {
                    c.rollback();
                    c.setAutoCommit(true);
                }
                idle.offer(c);
            }
        } catch (SQLException e) {
            try { c.close(); } catch (SQLException ignored) {}
        } finally {
            permits.release();
        }
    }

    static boolean isConnectionError(SQLException e) {
        String st = e.getSQLState();
        return st != null && (st.startsWith("08") || st.startsWith("57P"));
    }

    static boolean isRetryable(SQLException e) {
        String st = e.getSQLState();
        return "40001".equals(st) || "40P01".equals(st);
    }

    // ================================================================ transactions

    interface Work<T> {
        T run(Connection c) throws SQLException;
    }

    /** One autocommit unit of work (single statements: each is its own snapshot). */
    <T> T auto(Work<T> w) throws SQLException, PoolTimeout {
        Connection c = borrow();
        boolean broken = false;
        try {
            return w.run(c);
        } catch (SQLException e) {
            broken = isConnectionError(e);
            throw e;
        } finally {
            release(c, broken);
        }
    }

    static final class RetriesExhausted extends Exception {
        RetriesExhausted(SQLException cause) { super("gave up after retrying", cause); }
    }

    /**
     * Runs {@code w} in one transaction at the given isolation level and commits it. A
     * serialization failure (40001) or deadlock (40P01) retries the whole transaction, up to
     * {@code maxAttempts} times, with a short randomised back-off. Any other exception rolls back.
     */
    <T> T tx(String isolation, int maxAttempts, Work<T> w) throws SQLException, PoolTimeout, RetriesExhausted {
        for (int attempt = 1; ; attempt++) {
            Connection c = borrow();
            boolean broken = false;
            try {
                c.setAutoCommit(false);
                try (Statement st = c.createStatement()) {
                    st.execute("SET TRANSACTION ISOLATION LEVEL " + isolation);
                }
                T r = w.run(c);
                c.commit();
                return r;
            } catch (SQLException e) {
                broken = isConnectionError(e);
                if (!broken) rollbackQuietly(c);
                if (isRetryable(e)) {
                    if (maxAttempts <= 1) throw e; // retries switched off: the error surfaces as it is
                    if (attempt >= maxAttempts) throw new RetriesExhausted(e);
                    backoff(attempt);
                    continue;
                }
                throw e;
            } catch (RuntimeException | Error e) {
                rollbackQuietly(c);
                throw e;
            } finally {
                release(c, broken);
            }
        }
    }

    private static void rollbackQuietly(Connection c) {
        try { c.rollback(); } catch (SQLException ignored) {}
    }

    private static void backoff(int attempt) {
        long cap = Math.min(200, 5L << Math.min(attempt, 6));
        try {
            Thread.sleep(ThreadLocalRandom.current().nextLong(1, cap + 1));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
