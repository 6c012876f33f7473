import com.sun.net.httpserver.Headers;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.math.BigInteger;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.URLDecoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpTimeoutException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Pattern;

/**
 * The ledger of exercises/transactions: wallets, transfers, statements, conditional renames,
 * idempotent transfers and a fraud check, on PostgreSQL.
 *
 * INDEP_BUG=name switches on one planted bug, INDEP_STYLE=a,b legitimate alternative designs;
 * both are listed in BUGS.md.
 */
public final class Ledger {

    // ================================================================ switches

    static final Set<String> KNOWN_BUGS = Set.of(
            "rmw-balance", "lock-request-order", "overdraft-check-unlocked", "overdraft-off-by-one",
            "credit-unknown-vanishes", "transfer-same-account", "amount-truncated", "balance-limit-exclusive",
            "statement-two-snapshots", "statement-oldest-first", "no-check-constraint",
            "fraud-decline-leaves-entry", "fraud-fail-open", "fraud-no-timeout", "fraud-amount-string",
            "etag-check-then-write", "etag-not-bumped", "idem-check-then-insert", "idem-ignores-body");

    static final Set<String> KNOWN_STYLES = Set.of(
            "int-ids", "serializable", "conditional-update", "fraud-first", "unknown-422", "fraud-502",
            "idem-409", "statement-one-query", "etag-token", "etag-strict");

    static String BUG = "";
    static Set<String> STYLES = Set.of();

    static boolean bug(String name) { return name.equals(BUG); }
    static boolean style(String name) { return STYLES.contains(name); }

    static final long MAX_OPENING = 1_000_000_000L;
    static final long MAX_AMOUNT = 100_000_000L;
    static final int MAX_OWNER = 100;
    static final int MAX_BODY = 1 << 20;
    static final String BALANCE_CHECK = "accounts_balance_nonnegative";
    static final String NEW_TOKEN_SQL = "substr(md5(random()::text || clock_timestamp()::text), 1, 20)";

    static Db db;
    static Fraud fraud;
    static boolean intIds;

    // ================================================================ start-up

    public static void main(String[] args) throws Exception {
        BUG = env("INDEP_BUG", "").trim();
        if (!BUG.isEmpty() && !KNOWN_BUGS.contains(BUG)) {
            die("INDEP_BUG=" + BUG + " is not a known bug; known: " + new TreeSet<>(KNOWN_BUGS));
        }
        Set<String> styles = new HashSet<>();
        for (String s : env("INDEP_STYLE", "").split(",")) {
            s = s.trim();
            if (s.isEmpty()) continue;
            if (!KNOWN_STYLES.contains(s)) die("INDEP_STYLE " + s + " is not a known style; known: " + new TreeSet<>(KNOWN_STYLES));
            styles.add(s);
        }
        STYLES = Set.copyOf(styles);
        intIds = style("int-ids");

        int port;
        try {
            port = Integer.parseInt(env("PORT", "8080").trim());
        } catch (NumberFormatException e) {
            die("PORT must be a number, got '" + env("PORT", "") + "'");
            return;
        }
        Db.Config cfg;
        try {
            cfg = Db.parseUrl(System.getenv("DATABASE_URL"));
        } catch (Db.BadUrl e) {
            die("cannot use DATABASE_URL: " + e.getMessage());
            return;
        }
        int poolSize = Integer.parseInt(env("DB_POOL_SIZE", "40"));
        Class.forName("org.postgresql.Driver");
        db = new Db(cfg, poolSize);
        fraud = new Fraud(System.getenv("FRAUD_URL"));

        log("java-ledger starting: db=" + cfg.describe + " pool=" + poolSize + " fraud=" + fraud.uri
                + (BUG.isEmpty() ? "" : " INDEP_BUG=" + BUG) + (STYLES.isEmpty() ? "" : " INDEP_STYLE=" + new TreeSet<>(STYLES)));
        waitForDatabase();
        createSchema();

        HttpServer server = HttpServer.create(new InetSocketAddress(port), 1024);
        AtomicInteger n = new AtomicInteger();
        ThreadPoolExecutor pool = new ThreadPoolExecutor(64, 64, 60, TimeUnit.SECONDS, new LinkedBlockingQueue<>(),
                r -> { Thread t = new Thread(r, "http-" + n.incrementAndGet()); t.setDaemon(false); return t; });
        server.setExecutor(pool);
        server.createContext("/", Ledger::handle);
        server.start();
        log("listening on port " + port);
    }

    static String env(String k, String dflt) {
        String v = System.getenv(k);
        return v == null ? dflt : v;
    }

    static void die(String msg) {
        System.err.println("java-ledger: " + msg);
        System.exit(2);
    }

    static void log(String msg) {
        System.out.println(Instant.now() + " " + msg);
    }

    static void waitForDatabase() throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(45);
        while (true) {
            try {
                db.auto(c -> { try (Statement st = c.createStatement()) { st.execute("SELECT 1"); } return null; });
                return;
            } catch (SQLException e) {
                if (System.nanoTime() > deadline) {
                    die("cannot connect to PostgreSQL: " + e.getMessage());
                }
                log("waiting for PostgreSQL: " + e.getMessage());
                Thread.sleep(500);
            }
        }
    }

    static void createSchema() throws Exception {
        String idType = intIds ? "bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY" : "uuid PRIMARY KEY";
        String refType = intIds ? "bigint" : "uuid";
        String balanceCheck = bug("no-check-constraint") ? "" : " CONSTRAINT " + BALANCE_CHECK + " CHECK (balance_cents >= 0)";
        String fk = bug("credit-unknown-vanishes") ? "" : " REFERENCES wallets (id)";
        String distinct = bug("transfer-same-account") ? "" : ",\n CONSTRAINT transfers_distinct_accounts CHECK (from_wallet_id <> to_wallet_id)";
        String keyPk = bug("idem-check-then-insert") ? "" : " PRIMARY KEY";
        List<String> ddl = List.of(
                "CREATE TABLE IF NOT EXISTS wallets (\n"
                        + " id " + idType + ",\n"
                        + " owner text NOT NULL,\n"
                        + " opening_balance_cents bigint NOT NULL CHECK (opening_balance_cents >= 0),\n"
                        + " balance_cents bigint NOT NULL" + balanceCheck + ",\n"
                        + " version bigint NOT NULL DEFAULT 1,\n"
                        + " etag text NOT NULL DEFAULT " + NEW_TOKEN_SQL + ",\n"
                        + " created_at timestamptz NOT NULL DEFAULT now())",
                "CREATE TABLE IF NOT EXISTS transfers (\n"
                        + " id " + idType + ",\n"
                        + " seq bigserial NOT NULL UNIQUE,\n"
                        + " from_wallet_id " + refType + " NOT NULL" + fk + ",\n"
                        + " to_wallet_id " + refType + " NOT NULL" + fk + ",\n"
                        + " amount_cents bigint NOT NULL CHECK (amount_cents > 0),\n"
                        + " created_at timestamptz NOT NULL DEFAULT now()" + distinct + ")",
                "CREATE INDEX IF NOT EXISTS transfers_from_idx ON transfers (from_wallet_id, seq)",
                "CREATE INDEX IF NOT EXISTS transfers_to_idx ON transfers (to_wallet_id, seq)",
                "CREATE TABLE IF NOT EXISTS idempotency_keys (\n"
                        + " key text NOT NULL" + keyPk + ",\n"
                        + " fingerprint text NOT NULL,\n"
                        + " transfer_id " + refType + " REFERENCES transfers (id),\n"
                        + " created_at timestamptz NOT NULL DEFAULT now())",
                "CREATE INDEX IF NOT EXISTS idempotency_keys_key_idx ON idempotency_keys (key)");
        db.tx("READ COMMITTED", 5, c -> {
            try (Statement st = c.createStatement()) {
                st.execute("SELECT pg_advisory_xact_lock(727272)");
                for (String s : ddl) st.execute(s);
            }
            return null;
        });
        log("schema ready");
    }

    // ================================================================ HTTP plumbing

    static final class Response {
        final int status;
        final String body; // null: no body
        final String contentType;
        final Map<String, String> headers = new LinkedHashMap<>();

        Response(int status, String body, String contentType) {
            this.status = status;
            this.body = body;
            this.contentType = contentType;
        }

        static Response json(int status, Object value) {
            return new Response(status, Json.write(value), "application/json");
        }

        Response header(String k, String v) { headers.put(k, v); return this; }
    }

    /** An error answered as an RFC 9457 problem document. */
    static final class ApiError extends RuntimeException {
        final int status;
        final String detail;
        final List<Map<String, Object>> errors;
        final Map<String, String> headers = new LinkedHashMap<>();

        ApiError(int status, String detail) { this(status, detail, null); }

        ApiError(int status, String detail, List<Map<String, Object>> errors) {
            super(detail, null, false, false);
            this.status = status;
            this.detail = detail;
            this.errors = errors;
        }

        ApiError header(String k, String v) { headers.put(k, v); return this; }
    }

    static String reason(int status) {
        switch (status) {
            case 400: return "Bad Request";
            case 404: return "Not Found";
            case 405: return "Method Not Allowed";
            case 409: return "Conflict";
            case 412: return "Precondition Failed";
            case 413: return "Content Too Large";
            case 422: return "Unprocessable Content";
            case 428: return "Precondition Required";
            case 500: return "Internal Server Error";
            case 502: return "Bad Gateway";
            case 503: return "Service Unavailable";
            case 504: return "Gateway Timeout";
            default: return "Error";
        }
    }

    static Response problem(ApiError e, String instance) {
        Map<String, Object> p = Json.obj("type", "about:blank", "title", reason(e.status), "status", e.status,
                "detail", e.detail, "instance", instance);
        if (e.errors != null) p.put("errors", e.errors);
        Response r = new Response(e.status, Json.write(p), "application/problem+json");
        r.headers.putAll(e.headers);
        return r;
    }

    static void handle(HttpExchange ex) {
        long t0 = System.nanoTime();
        String method = ex.getRequestMethod();
        String path = ex.getRequestURI().getRawPath();
        Response r;
        try {
            r = route(ex, method, path);
        } catch (ApiError e) {
            r = problem(e, path);
        } catch (Db.PoolTimeout e) {
            r = problem(new ApiError(503, "the database is busy; try again").header("Retry-After", "1"), path);
        } catch (Db.RetriesExhausted e) {
            log("gave up after retries: " + e.getCause());
            r = problem(new ApiError(503, "too much contention on these wallets; try again").header("Retry-After", "1"), path);
        } catch (SQLException e) {
            r = problem(fromSql(e), path);
        } catch (Throwable t) {
            log("internal error on " + method + " " + path + ": " + t);
            t.printStackTrace(System.out);
            r = problem(new ApiError(500, "internal error"), path);
        }
        try {
            Headers h = ex.getResponseHeaders();
            r.headers.forEach(h::set);
            if (r.body == null) {
                ex.sendResponseHeaders(r.status, -1);
            } else {
                byte[] b = r.body.getBytes(StandardCharsets.UTF_8);
                h.set("Content-Type", r.contentType);
                ex.sendResponseHeaders(r.status, b.length);
                try (OutputStream os = ex.getResponseBody()) { os.write(b); }
            }
        } catch (IOException e) {
            // the client went away
        } finally {
            ex.close();
        }
        log(method + " " + ex.getRequestURI() + " " + r.status + " " + (System.nanoTime() - t0) / 1_000_000 + "ms");
    }

    static ApiError fromSql(SQLException e) {
        String state = e.getSQLState();
        if ("23514".equals(state) && BALANCE_CHECK.equals(constraintOf(e)) && !bug("overdraft-check-unlocked")) {
            // the database refused a negative balance: the transfer overdraws
            return new ApiError(409, "insufficient funds");
        }
        if (Db.isConnectionError(e)) {
            log("database connection error: " + e.getMessage());
            return new ApiError(503, "the database is unavailable; try again").header("Retry-After", "1");
        }
        log("SQL error " + state + ": " + e.getMessage());
        return new ApiError(500, "internal error");
    }

    static String constraintOf(SQLException e) {
        if (e instanceof org.postgresql.util.PSQLException) {
            org.postgresql.util.ServerErrorMessage m = ((org.postgresql.util.PSQLException) e).getServerErrorMessage();
            if (m != null) return m.getConstraint();
        }
        return null;
    }

    static final Pattern UUID_RE = Pattern.compile("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}");
    static final Pattern INT_RE = Pattern.compile("[1-9][0-9]{0,17}");

    static Response route(HttpExchange ex, String method, String path) throws Exception {
        String[] seg = path.split("/", -1); // "/wallets/x" -> ["", "wallets", "x"]
        if (path.equals("/healthz")) {
            requireMethod(method, "GET");
            return Response.json(200, Json.obj("status", "ok"));
        }
        if (seg.length >= 2 && seg[0].isEmpty() && seg[1].equals("wallets")) {
            if (seg.length == 2) {
                requireMethod(method, "POST");
                return createAccount(ex);
            }
            if (seg.length == 3 || seg.length == 4 && seg[3].equals("statement")) {
                Object id = parsePathId(seg[2]);
                if (seg.length == 4) {
                    requireMethod(method, "GET");
                    if (id == null) throw accountNotFound();
                    return statement(id);
                }
                requireMethod(method, "GET", "PATCH");
                if (id == null) throw accountNotFound();
                return method.equals("GET") ? getAccount(id) : renameAccount(ex, id);
            }
        }
        if (seg.length >= 2 && seg[0].isEmpty() && seg[1].equals("transfers")) {
            if (seg.length == 2) {
                requireMethod(method, "POST");
                return createTransfer(ex);
            }
            if (seg.length == 3) {
                requireMethod(method, "GET");
                Object id = parsePathId(seg[2]);
                if (id == null) throw new ApiError(404, "no such transfer");
                return getTransfer(id);
            }
        }
        throw new ApiError(404, "no such resource");
    }

    static void requireMethod(String method, String... allowed) {
        for (String a : allowed) if (a.equals(method)) return;
        throw new ApiError(405, "method " + method + " is not allowed here").header("Allow", String.join(", ", allowed));
    }

    /** The id in a path: a UUID (or a positive integer with int-ids); null when it cannot be one. */
    static Object parsePathId(String raw) {
        String s;
        try {
            s = URLDecoder.decode(raw.replace("+", "%2B"), StandardCharsets.UTF_8);
        } catch (IllegalArgumentException e) {
            return null;
        }
        if (intIds) return INT_RE.matcher(s).matches() ? Long.valueOf(s) : null;
        return UUID_RE.matcher(s).matches() ? UUID.fromString(s) : null;
    }

    static Object jsonId(Object id) { return id instanceof UUID ? id.toString() : id; }

    static int compareIds(Object a, Object b) {
        if (a instanceof Long) return Long.compare((Long) a, (Long) b);
        return a.toString().compareTo(b.toString()); // lower-case hex: the same order as PostgreSQL's uuid
    }

    static Object readId(ResultSet rs, String col) throws SQLException {
        Object o = rs.getObject(col);
        if (o instanceof Number) return ((Number) o).longValue();
        return o;
    }

    static ApiError accountNotFound() { return new ApiError(404, "no such account"); }

    // ================================================================ request bodies

    static Map<String, Object> readObject(HttpExchange ex) throws IOException {
        String cl = ex.getRequestHeaders().getFirst("Content-Length");
        if (cl != null) {
            try {
                if (Long.parseLong(cl.trim()) > MAX_BODY) throw new ApiError(413, "the body is larger than " + MAX_BODY + " bytes");
            } catch (NumberFormatException ignored) {
                // the server has already rejected it
            }
        }
        byte[] bytes;
        try (InputStream in = ex.getRequestBody()) {
            bytes = in.readNBytes(MAX_BODY + 1);
        }
        if (bytes.length > MAX_BODY) throw new ApiError(413, "the body is larger than " + MAX_BODY + " bytes");
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(bytes)).toString();
        } catch (CharacterCodingException e) {
            throw new ApiError(422, "the body is not valid UTF-8");
        }
        if (text.startsWith("\uFEFF")) text = text.substring(1);
        Object v;
        try {
            v = Json.parse(text);
        } catch (Json.ParseException e) {
            throw new ApiError(422, "the body is not valid JSON: " + e.getMessage());
        }
        if (!(v instanceof Map)) throw new ApiError(422, "the body must be a JSON object");
        @SuppressWarnings("unchecked") Map<String, Object> m = (Map<String, Object>) v;
        return m;
    }

    static Map<String, Object> fieldError(String field, String message) {
        return Json.obj("field", field, "message", message);
    }

    static ApiError invalid(List<Map<String, Object>> errs) {
        StringBuilder d = new StringBuilder();
        for (Map<String, Object> e : errs) {
            if (d.length() > 0) d.append("; ");
            d.append(e.get("field")).append(": ").append(e.get("message"));
        }
        return new ApiError(422, d.toString(), errs);
    }

    static String owner(Object v, List<Map<String, Object>> errs) {
        if (v == null || v == Json.NULL) { errs.add(fieldError("owner", "is required")); return null; }
        if (!(v instanceof String)) { errs.add(fieldError("owner", "must be a string")); return null; }
        String s = (String) v;
        int n = s.codePointCount(0, s.length());
        if (n < 1 || n > MAX_OWNER) { errs.add(fieldError("owner", "must be 1 to " + MAX_OWNER + " characters long")); return null; }
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == 0) { errs.add(fieldError("owner", "must not contain U+0000")); return null; }
            if (Character.isHighSurrogate(c) && (i + 1 >= s.length() || !Character.isLowSurrogate(s.charAt(i + 1)))
                    || Character.isLowSurrogate(c) && (i == 0 || !Character.isHighSurrogate(s.charAt(i - 1)))) {
                errs.add(fieldError("owner", "contains an unpaired surrogate"));
                return null;
            }
        }
        return s;
    }

    /** An integer member in [min, max]; JSON numbers with a fraction or exponent are not integers. */
    static Long integer(Map<String, Object> body, String field, long min, long max, List<Map<String, Object>> errs) {
        Object v = body.get(field);
        if (v == null || v == Json.NULL) { errs.add(fieldError(field, "is required")); return null; }
        if (!(v instanceof Json.Num)) { errs.add(fieldError(field, "must be an integer")); return null; }
        Json.Num n = (Json.Num) v;
        BigInteger b;
        if (bug("amount-truncated")) {
            b = n.decimal().toBigInteger(); // "it's a number, take its long value"
        } else {
            if (!n.isIntegerLiteral()) { errs.add(fieldError(field, "must be an integer")); return null; }
            b = n.bigInteger();
        }
        if (b.compareTo(BigInteger.valueOf(min)) < 0 || b.compareTo(BigInteger.valueOf(max)) > 0) {
            errs.add(fieldError(field, "must be from " + min + " to " + max));
            return null;
        }
        return b.longValue();
    }

    static Object bodyId(Map<String, Object> body, String field, List<Map<String, Object>> errs) {
        Object v = body.get(field);
        if (v == null || v == Json.NULL) { errs.add(fieldError(field, "is required")); return null; }
        if (intIds) {
            String s = null;
            if (v instanceof Json.Num && ((Json.Num) v).isIntegerLiteral()) s = ((Json.Num) v).raw;
            else if (v instanceof String) s = (String) v;
            if (s != null && INT_RE.matcher(s).matches()) return Long.valueOf(s);
            errs.add(fieldError(field, "must be an account id (a positive integer)"));
            return null;
        }
        if (!(v instanceof String)) { errs.add(fieldError(field, "must be a string (an account id)")); return null; }
        String s = (String) v;
        if (!UUID_RE.matcher(s).matches()) { errs.add(fieldError(field, "is not a valid account id")); return null; }
        return UUID.fromString(s);
    }

    // ================================================================ wallets

    static final class Account {
        Object id;
        String owner;
        long balance;
        long version;
        String token;

        static Account from(ResultSet rs) throws SQLException {
            Account a = new Account();
            a.id = readId(rs, "id");
            a.owner = rs.getString("owner");
            a.balance = rs.getLong("balance_cents");
            a.version = rs.getLong("version");
            a.token = rs.getString("etag");
            return a;
        }

        String etag() { return style("etag-token") ? "\"" + token + "\"" : "\"v" + version + "\""; }

        Map<String, Object> json() { return Json.obj("id", jsonId(id), "owner", owner, "balance_cents", balance); }

        Response response(int status) { return Response.json(status, json()).header("ETag", etag()); }
    }

    static final String ACCOUNT_COLS = "id, owner, balance_cents, version, etag";

    static Response createAccount(HttpExchange ex) throws Exception {
        Map<String, Object> body = readObject(ex);
        List<Map<String, Object>> errs = new ArrayList<>();
        String owner = owner(body.get("owner"), errs);
        long max = bug("balance-limit-exclusive") ? MAX_OPENING - 1 : MAX_OPENING; // "< 1000000000"
        Long balance = integer(body, "balance_cents", 0, max, errs);
        if (!errs.isEmpty()) throw invalid(errs);
        Account a = db.auto(c -> {
            String sql = intIds
                    ? "INSERT INTO wallets (owner, opening_balance_cents, balance_cents) VALUES (?, ?, ?) RETURNING " + ACCOUNT_COLS
                    : "INSERT INTO wallets (id, owner, opening_balance_cents, balance_cents) VALUES (?, ?, ?, ?) RETURNING " + ACCOUNT_COLS;
            try (PreparedStatement ps = c.prepareStatement(sql)) {
                int i = 1;
                if (!intIds) ps.setObject(i++, UUID.randomUUID());
                ps.setString(i++, owner);
                ps.setLong(i++, balance);
                ps.setLong(i, balance);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    return Account.from(rs);
                }
            }
        });
        return a.response(201).header("Location", "/wallets/" + jsonId(a.id));
    }

    static Account loadAccount(Connection c, Object id) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement("SELECT " + ACCOUNT_COLS + " FROM wallets WHERE id = ?")) {
            ps.setObject(1, id);
            try (ResultSet rs = ps.executeQuery()) {
                return rs.next() ? Account.from(rs) : null;
            }
        }
    }

    static Response getAccount(Object id) throws Exception {
        Account a = db.auto(c -> loadAccount(c, id));
        if (a == null) throw accountNotFound();
        return a.response(200);
    }

    /** The entity-tags of an If-Match header: null for "*", else the strong tags (weak ones never match). */
    static List<String> ifMatchTags(String header) {
        List<String> tags = new ArrayList<>();
        String h = header.trim();
        if (h.equals("*")) return null;
        int i = 0;
        while (i < h.length()) {
            char c = h.charAt(i);
            if (c == ' ' || c == '\t' || c == ',') { i++; continue; }
            boolean weak = false;
            if (h.startsWith("W/", i)) { weak = true; i += 2; }
            if (i >= h.length() || h.charAt(i) != '"') {
                // not an entity-tag: skip to the next comma; it matches nothing
                while (i < h.length() && h.charAt(i) != ',') i++;
                continue;
            }
            int end = h.indexOf('"', i + 1);
            if (end < 0) break;
            if (!weak) tags.add(h.substring(i, end + 1));
            i = end + 1;
        }
        return tags;
    }

    static Response renameAccount(HttpExchange ex, Object id) throws Exception {
        List<String> lines = ex.getRequestHeaders().get("If-Match");
        String ifMatch = lines == null ? null : String.join(", ", lines);
        if (ifMatch == null || ifMatch.isBlank()) {
            Account a = db.auto(c -> loadAccount(c, id));
            if (a == null) throw accountNotFound();
            throw new ApiError(428, "a rename needs an If-Match header with the account's current ETag (GET /wallets/{id})");
        }
        Map<String, Object> body = readObject(ex);
        List<Map<String, Object>> errs = new ArrayList<>();
        String owner = owner(body.get("owner"), errs);
        if (!errs.isEmpty()) throw invalid(errs);
        List<String> tags = ifMatchTags(ifMatch);

        if (bug("etag-check-then-write")) {
            // compare in code, then write unconditionally
            Account cur = db.auto(c -> loadAccount(c, id));
            if (cur == null) throw accountNotFound();
            if (tags != null && !tags.contains(cur.etag())) throw preconditionFailed();
            Account a = db.auto(c -> {
                String sql = "UPDATE wallets SET owner = ?, version = version + 1, etag = " + NEW_TOKEN_SQL
                        + " WHERE id = ? RETURNING " + ACCOUNT_COLS;
                try (PreparedStatement ps = c.prepareStatement(sql)) {
                    ps.setString(1, owner);
                    ps.setObject(2, id);
                    try (ResultSet rs = ps.executeQuery()) { return rs.next() ? Account.from(rs) : null; }
                }
            });
            if (a == null) throw accountNotFound();
            return a.response(200);
        }

        // compare and write in one statement: 0 rows means the precondition failed (or no account)
        String bump = bug("etag-not-bumped") ? "" : style("etag-token") ? ", etag = " + NEW_TOKEN_SQL : ", version = version + 1";
        Account a = db.auto(c -> {
            String cond;
            Object arg = null;
            if (tags == null) {
                cond = "";
            } else if (style("etag-token")) {
                List<String> toks = new ArrayList<>();
                for (String t : tags) toks.add(t.substring(1, t.length() - 1));
                cond = " AND etag = ANY (?)";
                arg = c.createArrayOf("text", toks.toArray());
            } else {
                List<Long> versions = new ArrayList<>();
                for (String t : tags) {
                    if (t.matches("\"v[1-9][0-9]{0,17}\"")) versions.add(Long.valueOf(t.substring(2, t.length() - 1)));
                }
                cond = " AND version = ANY (?)";
                arg = c.createArrayOf("bigint", versions.toArray());
            }
            String sql = "UPDATE wallets SET owner = ?" + bump + " WHERE id = ?" + cond + " RETURNING " + ACCOUNT_COLS;
            try (PreparedStatement ps = c.prepareStatement(sql)) {
                ps.setString(1, owner);
                ps.setObject(2, id);
                if (arg != null) ps.setObject(3, arg);
                try (ResultSet rs = ps.executeQuery()) {
                    if (rs.next()) return Account.from(rs);
                }
            }
            if (loadAccount(c, id) == null) throw accountNotFound();
            throw preconditionFailed();
        });
        return a.response(200);
    }

    static ApiError preconditionFailed() {
        return new ApiError(412, "the account has changed since you read it: GET it again and retry with its current ETag");
    }

    // ================================================================ statement

    static Response statement(Object id) throws Exception {
        String order = bug("statement-oldest-first") ? "ASC" : "DESC";
        String entriesSql = "SELECT id, CASE WHEN from_wallet_id = ? THEN -amount_cents ELSE amount_cents END AS amount"
                + " FROM transfers WHERE from_wallet_id = ? OR to_wallet_id = ? ORDER BY seq " + order;
        String accountSql = "SELECT opening_balance_cents, balance_cents FROM wallets WHERE id = ?";
        Db.Work<Map<String, Object>> twoReads = c -> {
            long opening, balance;
            try (PreparedStatement ps = c.prepareStatement(accountSql)) {
                ps.setObject(1, id);
                try (ResultSet rs = ps.executeQuery()) {
                    if (!rs.next()) return null;
                    opening = rs.getLong(1);
                    balance = rs.getLong(2);
                }
            }
            List<Object> entries = new ArrayList<>();
            try (PreparedStatement ps = c.prepareStatement(entriesSql)) {
                ps.setObject(1, id);
                ps.setObject(2, id);
                ps.setObject(3, id);
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) entries.add(Json.obj("transfer_id", jsonId(readId(rs, "id")), "amount_cents", rs.getLong(2)));
                }
            }
            return statementJson(id, opening, balance, entries);
        };
        Map<String, Object> st;
        if (bug("statement-two-snapshots")) {
            st = db.auto(twoReads); // autocommit: each SELECT sees its own snapshot
        } else if (style("statement-one-query")) {
            st = db.auto(c -> {
                String sql = "SELECT a.opening_balance_cents, a.balance_cents, t.id AS tid,"
                        + " CASE WHEN t.from_wallet_id = a.id THEN -t.amount_cents ELSE t.amount_cents END AS amount"
                        + " FROM wallets a LEFT JOIN transfers t ON t.from_wallet_id = a.id OR t.to_wallet_id = a.id"
                        + " WHERE a.id = ? ORDER BY t.seq " + order;
                try (PreparedStatement ps = c.prepareStatement(sql)) {
                    ps.setObject(1, id);
                    try (ResultSet rs = ps.executeQuery()) {
                        Long opening = null, balance = null;
                        List<Object> entries = new ArrayList<>();
                        while (rs.next()) {
                            opening = rs.getLong(1);
                            balance = rs.getLong(2);
                            if (rs.getObject("tid") != null) {
                                entries.add(Json.obj("transfer_id", jsonId(readId(rs, "tid")), "amount_cents", rs.getLong("amount")));
                            }
                        }
                        return opening == null ? null : statementJson(id, opening, balance, entries);
                    }
                }
            });
        } else {
            st = db.tx("REPEATABLE READ, READ ONLY", 5, twoReads); // both reads in one snapshot
        }
        if (st == null) throw accountNotFound();
        return Response.json(200, st);
    }

    static Map<String, Object> statementJson(Object id, long opening, long balance, List<Object> entries) {
        return Json.obj("wallet_id", jsonId(id), "opening_balance_cents", opening, "balance_cents", balance, "entries", entries);
    }

    // ================================================================ transfers

    static final class TransferReq {
        Object from, to;
        long amount;
        Object fromRaw, toRaw, amountRaw; // the JSON values as the client sent them
    }

    static final class Transfer {
        Object id, from, to;
        long amount;

        Map<String, Object> json() {
            return Json.obj("id", jsonId(id), "from_wallet_id", jsonId(from), "to_wallet_id", jsonId(to), "amount_cents", amount);
        }

        Response created() {
            return Response.json(201, json()).header("Location", "/transfers/" + jsonId(id));
        }
    }

    static TransferReq validateTransfer(Map<String, Object> body) {
        List<Map<String, Object>> errs = new ArrayList<>();
        TransferReq r = new TransferReq();
        r.from = bodyId(body, "from_wallet_id", errs);
        r.to = bodyId(body, "to_wallet_id", errs);
        Long amount = integer(body, "amount_cents", 1, MAX_AMOUNT, errs);
        if (r.from != null && r.to != null && r.from.equals(r.to) && !bug("transfer-same-account")) {
            errs.add(fieldError("to_wallet_id", "must differ from from_wallet_id"));
        }
        if (!errs.isEmpty()) throw invalid(errs);
        r.amount = amount;
        r.fromRaw = body.get("from_wallet_id");
        r.toRaw = body.get("to_wallet_id");
        r.amountRaw = body.get("amount_cents");
        return r;
    }

    /** The Idempotency-Key: null when absent; bare or as a structured-field string. */
    static String idempotencyKey(HttpExchange ex) {
        List<String> values = ex.getRequestHeaders().get("Idempotency-Key");
        if (values == null) return null;
        if (values.size() != 1) throw new ApiError(400, "send one Idempotency-Key header");
        String k = values.get(0).trim();
        if (k.length() >= 2 && k.startsWith("\"") && k.endsWith("\"")) {
            StringBuilder b = new StringBuilder();
            for (int i = 1; i < k.length() - 1; i++) {
                char c = k.charAt(i);
                if (c == '\\') {
                    if (i + 1 >= k.length() - 1) throw badKey();
                    char n = k.charAt(++i);
                    if (n != '"' && n != '\\') throw badKey();
                    b.append(n);
                } else if (c == '"') {
                    throw badKey();
                } else {
                    b.append(c);
                }
            }
            k = b.toString();
        }
        if (k.isEmpty() || k.length() > 255) throw badKey();
        for (int i = 0; i < k.length(); i++) {
            char c = k.charAt(i);
            if (c < '!' || c > '~') throw badKey();
        }
        return k;
    }

    static ApiError badKey() {
        return new ApiError(400, "Idempotency-Key must be 1 to 255 visible ASCII characters");
    }

    static String sha256(String s) {
        try {
            byte[] d = MessageDigest.getInstance("SHA-256").digest(s.getBytes(StandardCharsets.UTF_8));
            StringBuilder b = new StringBuilder();
            for (byte x : d) b.append(String.format("%02x", x));
            return b.toString();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    static String isolation() { return style("serializable") ? "SERIALIZABLE" : "READ COMMITTED"; }

    static int attempts() {
        if (bug("lock-request-order")) return 1; // no retry loop
        return style("serializable") ? 40 : 10;
    }

    static Response createTransfer(HttpExchange ex) throws Exception {
        Map<String, Object> body = readObject(ex);
        TransferReq r = validateTransfer(body);
        String key = idempotencyKey(ex);
        String fp = key == null ? null : sha256(Json.canonical(body));

        if (key != null && bug("idem-check-then-insert")) return checkThenInsert(r, key, fp);

        boolean asked = false;
        if (style("fraud-first")) {
            // Ask before any lock is held. A replay must not ask, and an overdraft or an unknown
            // account is answered without asking; the transaction below checks everything again.
            if (key != null) {
                Response replay = db.auto(c -> lookupKey(c, key, fp));
                if (replay != null) return replay;
            }
            db.auto(c -> { precheck(c, r); return null; });
            askFraud(r);
            asked = true;
        }
        if (bug("fraud-decline-leaves-entry")) return commitThenAsk(r, key, fp);

        final boolean fraudAsked = asked;
        return db.tx(isolation(), attempts(), c -> {
            if (key != null) {
                if (style("idem-409")) {
                    try (PreparedStatement ps = c.prepareStatement("SELECT pg_try_advisory_xact_lock(hashtextextended(?, 7))")) {
                        ps.setString(1, key);
                        try (ResultSet rs = ps.executeQuery()) {
                            rs.next();
                            if (!rs.getBoolean(1)) {
                                throw new ApiError(409, "a request with this Idempotency-Key is in progress; retry later").header("Retry-After", "1");
                            }
                        }
                    }
                }
                Response replay = claimKey(c, key, fp);
                if (replay != null) return replay;
            }
            Transfer t = move(c, r, fraudAsked);
            if (key != null) {
                try (PreparedStatement ps = c.prepareStatement("UPDATE idempotency_keys SET transfer_id = ? WHERE key = ?")) {
                    ps.setObject(1, t.id);
                    ps.setString(2, key);
                    ps.executeUpdate();
                }
            }
            return t.created();
        });
    }

    /**
     * Claims the key inside the transfer's transaction. The primary key decides: a concurrent
     * request with the same key waits here until the first one commits (then it replays) or rolls
     * back (then it claims the key itself). Null: claimed, go on.
     */
    static Response claimKey(Connection c, String key, String fp) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(
                "INSERT INTO idempotency_keys (key, fingerprint) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")) {
            ps.setString(1, key);
            ps.setString(2, fp);
            if (ps.executeUpdate() == 1) return null;
        }
        Response replay = lookupKey(c, key, fp);
        if (replay == null) throw new ApiError(409, "a request with this Idempotency-Key is in progress; retry later");
        return replay;
    }

    /** The stored answer for a key: a replay, a 422 for another body, or null when the key is unknown. */
    static Response lookupKey(Connection c, String key, String fp) throws SQLException {
        String storedFp;
        Object transferId;
        try (PreparedStatement ps = c.prepareStatement(
                "SELECT fingerprint, transfer_id FROM idempotency_keys WHERE key = ? LIMIT 1")) {
            ps.setString(1, key);
            try (ResultSet rs = ps.executeQuery()) {
                if (!rs.next()) return null;
                storedFp = rs.getString(1);
                transferId = readId(rs, "transfer_id");
            }
        }
        if (!storedFp.equals(fp) && !bug("idem-ignores-body")) {
            throw new ApiError(422, "this Idempotency-Key was used with a different request body");
        }
        if (transferId == null) return null;
        Transfer t = loadTransfer(c, transferId);
        if (t == null) return null;
        return t.created().header("Idempotent-Replayed", "true");
    }

    /** fraud-first: the cheap checks before asking, without locks (the transaction checks again). */
    static void precheck(Connection c, TransferReq r) throws SQLException {
        Long fb = balance(c, r.from, false);
        Long tb = balance(c, r.to, false);
        if (fb == null || tb == null) throw unknownAccount(fb == null ? "from_wallet_id" : "to_wallet_id");
        if (fb < r.amount) throw insufficient();
    }

    static ApiError unknownAccount(String field) {
        if (style("unknown-422")) {
            return invalid(List.of(fieldError(field, "no such account")));
        }
        return new ApiError(404, field + ": no such account");
    }

    static ApiError insufficient() {
        return new ApiError(409, "insufficient funds: the source account's balance is less than amount_cents");
    }

    static boolean overdraws(long balance, long amount) {
        return bug("overdraft-off-by-one") ? balance <= amount : balance < amount;
    }

    static Long balance(Connection c, Object id, boolean forUpdate) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(
                "SELECT balance_cents FROM wallets WHERE id = ?" + (forUpdate ? " FOR UPDATE" : ""))) {
            ps.setObject(1, id);
            try (ResultSet rs = ps.executeQuery()) {
                return rs.next() ? rs.getLong(1) : null;
            }
        }
    }

    static String bumpSql() {
        if (!style("etag-strict")) return "";
        return style("etag-token") ? ", etag = " + NEW_TOKEN_SQL : ", version = version + 1";
    }

    /** balance_cents = balance_cents + delta; the row count. */
    static int addTo(Connection c, Object id, long delta) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(
                "UPDATE wallets SET balance_cents = balance_cents + ?" + bumpSql() + " WHERE id = ?")) {
            ps.setLong(1, delta);
            ps.setObject(2, id);
            return ps.executeUpdate();
        }
    }

    /** Moves the money inside the caller's transaction and records the transfer. */
    static Transfer move(Connection c, TransferReq r, boolean fraudAsked) throws SQLException {
        if (bug("rmw-balance")) {
            Long fb = balance(c, r.from, false);
            Long tb = balance(c, r.to, false);
            if (fb == null || tb == null) throw unknownAccount(fb == null ? "from_wallet_id" : "to_wallet_id");
            if (overdraws(fb, r.amount)) throw insufficient();
            if (!fraudAsked) askFraud(r);
            if (compareIds(r.from, r.to) < 0) { // the writes at least go in id order
                setBalance(c, r.from, fb - r.amount);
                setBalance(c, r.to, tb + r.amount);
            } else {
                setBalance(c, r.to, tb + r.amount);
                setBalance(c, r.from, fb - r.amount);
            }
        } else if (bug("credit-unknown-vanishes")) {
            Long fb = balance(c, r.from, true);
            if (fb == null) throw unknownAccount("from_wallet_id");
            if (overdraws(fb, r.amount)) throw insufficient();
            if (!fraudAsked) askFraud(r);
            addTo(c, r.from, -r.amount);
            addTo(c, r.to, r.amount); // row count not looked at
        } else if (bug("overdraft-check-unlocked")) {
            Long fb = balance(c, r.from, false);
            Long tb = balance(c, r.to, false);
            if (fb == null || tb == null) throw unknownAccount(fb == null ? "from_wallet_id" : "to_wallet_id");
            if (overdraws(fb, r.amount)) throw insufficient();
            if (!fraudAsked) askFraud(r);
            boolean fromFirst = compareIds(r.from, r.to) < 0;
            addTo(c, fromFirst ? r.from : r.to, fromFirst ? -r.amount : r.amount);
            addTo(c, fromFirst ? r.to : r.from, fromFirst ? r.amount : -r.amount);
        } else if (style("conditional-update")) {
            // no explicit lock: the UPDATEs lock the rows, in id order, and the debit checks the balance
            if (compareIds(r.from, r.to) < 0) {
                debit(c, r);
                if (addTo(c, r.to, r.amount) == 0) throw unknownAccount("to_wallet_id");
            } else {
                if (addTo(c, r.to, r.amount) == 0) throw unknownAccount("to_wallet_id");
                debit(c, r);
            }
            if (!fraudAsked) askFraud(r); // still inside the transaction: a decline rolls both back
        } else if (style("serializable")) {
            // plain reads: SERIALIZABLE makes read-check-write safe (or aborts with 40001, retried)
            Long fb = balance(c, r.from, false);
            Long tb = balance(c, r.to, false);
            if (fb == null || tb == null) throw unknownAccount(fb == null ? "from_wallet_id" : "to_wallet_id");
            if (overdraws(fb, r.amount)) throw insufficient();
            if (!fraudAsked) askFraud(r);
            addTo(c, r.from, -r.amount);
            addTo(c, r.to, r.amount);
        } else {
            // lock both rows, always the smaller id first, so opposite transfers cannot deadlock
            boolean fromFirst = bug("lock-request-order") || compareIds(r.from, r.to) < 0;
            Object first = fromFirst ? r.from : r.to, second = fromFirst ? r.to : r.from;
            Long b1 = balance(c, first, true);
            Long b2 = balance(c, second, true);
            Long fb = fromFirst ? b1 : b2, tb = fromFirst ? b2 : b1;
            if (fb == null || tb == null) throw unknownAccount(fb == null ? "from_wallet_id" : "to_wallet_id");
            if (overdraws(fb, r.amount)) throw insufficient();
            if (!fraudAsked) askFraud(r); // inside the transaction, rows locked
            addTo(c, r.from, -r.amount);
            addTo(c, r.to, r.amount);
        }
        return insertTransfer(c, r);
    }

    static void setBalance(Connection c, Object id, long value) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement("UPDATE wallets SET balance_cents = ?" + bumpSql() + " WHERE id = ?")) {
            ps.setLong(1, value);
            ps.setObject(2, id);
            ps.executeUpdate();
        }
    }

    static void debit(Connection c, TransferReq r) throws SQLException {
        String cmp = bug("overdraft-off-by-one") ? ">" : ">=";
        try (PreparedStatement ps = c.prepareStatement("UPDATE wallets SET balance_cents = balance_cents - ?" + bumpSql()
                + " WHERE id = ? AND balance_cents " + cmp + " ?")) {
            ps.setLong(1, r.amount);
            ps.setObject(2, r.from);
            ps.setLong(3, r.amount);
            if (ps.executeUpdate() == 1) return;
        }
        if (balance(c, r.from, false) == null) throw unknownAccount("from_wallet_id");
        throw insufficient();
    }

    static Transfer insertTransfer(Connection c, TransferReq r) throws SQLException {
        String sql = intIds
                ? "INSERT INTO transfers (from_wallet_id, to_wallet_id, amount_cents) VALUES (?, ?, ?) RETURNING id"
                : "INSERT INTO transfers (id, from_wallet_id, to_wallet_id, amount_cents) VALUES (?, ?, ?, ?) RETURNING id";
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            int i = 1;
            if (!intIds) ps.setObject(i++, UUID.randomUUID());
            ps.setObject(i++, r.from);
            ps.setObject(i++, r.to);
            ps.setLong(i, r.amount);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                Transfer t = new Transfer();
                t.id = readId(rs, "id");
                t.from = r.from;
                t.to = r.to;
                t.amount = r.amount;
                return t;
            }
        }
    }

    static Transfer loadTransfer(Connection c, Object id) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(
                "SELECT id, from_wallet_id, to_wallet_id, amount_cents FROM transfers WHERE id = ?")) {
            ps.setObject(1, id);
            try (ResultSet rs = ps.executeQuery()) {
                if (!rs.next()) return null;
                Transfer t = new Transfer();
                t.id = readId(rs, "id");
                t.from = readId(rs, "from_wallet_id");
                t.to = readId(rs, "to_wallet_id");
                t.amount = rs.getLong("amount_cents");
                return t;
            }
        }
    }

    static Response getTransfer(Object id) throws Exception {
        Transfer t = db.auto(c -> loadTransfer(c, id));
        if (t == null) throw new ApiError(404, "no such transfer");
        return Response.json(200, t.json());
    }

    /** Bug idem-check-then-insert: look the key up, transfer, then remember the key (no UNIQUE). */
    static Response checkThenInsert(TransferReq r, String key, String fp) throws Exception {
        Response replay = db.auto(c -> lookupKey(c, key, fp));
        if (replay != null) return replay;
        Transfer t = db.tx(isolation(), attempts(), c -> move(c, r, false));
        db.auto(c -> {
            try (PreparedStatement ps = c.prepareStatement(
                    "INSERT INTO idempotency_keys (key, fingerprint, transfer_id) VALUES (?, ?, ?)")) {
                ps.setString(1, key);
                ps.setString(2, fp);
                ps.setObject(3, t.id);
                ps.executeUpdate();
            }
            return null;
        });
        return t.created();
    }

    /** Bug fraud-decline-leaves-entry: commit first, ask afterwards, undo the balances by hand. */
    static Response commitThenAsk(TransferReq r, String key, String fp) throws Exception {
        Object res = db.tx(isolation(), attempts(), c -> {
            if (key != null) {
                Response replay = claimKey(c, key, fp);
                if (replay != null) return replay;
            }
            Transfer t = move(c, r, true);
            if (key != null) {
                try (PreparedStatement ps = c.prepareStatement("UPDATE idempotency_keys SET transfer_id = ? WHERE key = ?")) {
                    ps.setObject(1, t.id);
                    ps.setString(2, key);
                    ps.executeUpdate();
                }
            }
            return t;
        });
        if (res instanceof Response) return (Response) res;
        Transfer t = (Transfer) res;
        try {
            askFraud(r);
        } catch (ApiError e) {
            db.tx(isolation(), attempts(), c -> {
                addTo(c, r.to, -r.amount);
                addTo(c, r.from, r.amount);
                return null;
            });
            throw e;
        }
        return t.created();
    }

    // ================================================================ fraud service

    static void askFraud(TransferReq r) {
        Fraud.Outcome o = fraud.check(r);
        switch (o) {
            case APPROVE:
                return;
            case DECLINE:
                throw new ApiError(422, "the transfer was declined by the fraud check");
            case TIMEOUT:
                throw new ApiError(style("fraud-502") ? 504 : 503, "the fraud check did not answer in time; try again later");
            default:
                throw new ApiError(style("fraud-502") ? 502 : 503, "the fraud check is unavailable; try again later");
        }
    }

    static final class Fraud {
        enum Outcome { APPROVE, DECLINE, UNAVAILABLE, TIMEOUT }

        static final Duration TIMEOUT = Duration.ofSeconds(2);
        final URI uri;
        final HttpClient client;

        Fraud(String base) {
            // a pooled keep-alive connection the server has closed fails before the check is
            // read; let the client retry a POST once on such a connection failure
            System.setProperty("jdk.httpclient.enableAllMethodRetry", "true");
            URI u = null;
            if (base == null || base.isBlank()) {
                log("FRAUD_URL is not set: every transfer will answer 503");
            } else {
                String b = base.trim();
                while (b.endsWith("/")) b = b.substring(0, b.length() - 1);
                try {
                    u = URI.create(b + "/checks");
                } catch (IllegalArgumentException e) {
                    die("FRAUD_URL is not a URL: " + base);
                }
            }
            uri = u;
            HttpClient.Builder cb = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1);
            if (!bug("fraud-no-timeout")) cb.connectTimeout(TIMEOUT);
            client = cb.build();
        }

        Outcome check(TransferReq r) {
            if (uri == null) return Outcome.UNAVAILABLE;
            Object amount = bug("fraud-amount-string") ? String.valueOf(r.amount) : r.amountRaw;
            String body = Json.write(Json.obj("from_wallet_id", r.fromRaw, "to_wallet_id", r.toRaw, "amount_cents", amount));
            HttpRequest.Builder rb = HttpRequest.newBuilder(uri)
                    .header("Content-Type", "application/json")
                    .header("Accept", "application/json")
                    .POST(HttpRequest.BodyPublishers.ofString(body));
            if (!bug("fraud-no-timeout")) rb.timeout(TIMEOUT);
            HttpRequest req = rb.build();
            HttpResponse<String> resp;
            try {
                if (bug("fraud-no-timeout")) {
                    resp = client.send(req, HttpResponse.BodyHandlers.ofString());
                } else {
                    CompletableFuture<HttpResponse<String>> f = client.sendAsync(req, HttpResponse.BodyHandlers.ofString());
                    try {
                        resp = f.get(TIMEOUT.toMillis(), TimeUnit.MILLISECONDS); // the whole exchange, body included
                    } catch (TimeoutException e) {
                        f.cancel(true);
                        log("fraud check: no answer within " + TIMEOUT.toMillis() + " ms");
                        return bug("fraud-fail-open") ? Outcome.APPROVE : Outcome.TIMEOUT;
                    } catch (ExecutionException e) {
                        Throwable cause = e.getCause();
                        log("fraud check failed: " + cause);
                        if (bug("fraud-fail-open")) return Outcome.APPROVE;
                        return cause instanceof HttpTimeoutException ? Outcome.TIMEOUT : Outcome.UNAVAILABLE;
                    }
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return Outcome.UNAVAILABLE;
            } catch (IOException e) {
                log("fraud check failed: " + e);
                return Outcome.UNAVAILABLE;
            }
            int s = resp.statusCode();
            if (bug("fraud-fail-open")) {
                return s >= 400 && s < 500 ? Outcome.DECLINE : Outcome.APPROVE; // "only a 4xx is a no"
            }
            if (s >= 400 && s < 500) return Outcome.DECLINE;
            if (s >= 200 && s < 300) {
                Object decision = null;
                try {
                    Object v = Json.parse(resp.body());
                    if (v instanceof Map) decision = ((Map<?, ?>) v).get("decision");
                } catch (Json.ParseException e) {
                    log("fraud check: unreadable answer: " + e.getMessage());
                }
                if ("approve".equals(decision)) return Outcome.APPROVE;
                if (decision instanceof String) return Outcome.DECLINE; // an explicit "decline"/"deny"
                return Outcome.UNAVAILABLE;
            }
            log("fraud check answered " + s);
            return Outcome.UNAVAILABLE;
        }
    }

    static {
        Locale.setDefault(Locale.ROOT);
    }
}
