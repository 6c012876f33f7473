// Starter service: it connects to PostgreSQL, answers GET /healthz, and implements nothing else.
//
// The grader sets PORT and DATABASE_URL. Every other request gets 501 Not Implemented as problem
// details (RFC 9457) until you build the exercise: README.md says where its tasks are.
package service;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;
import java.util.concurrent.Executors;

public class Main {
    public static void main(String[] args) throws IOException {
        String databaseUrl = System.getenv("DATABASE_URL");
        if (databaseUrl == null || databaseUrl.isEmpty()) {
            fail("DATABASE_URL is not set: this service needs PostgreSQL (grader check sets it)");
        }
        Connection db = null;
        try {
            // One connection for now; a pool (HikariCP) is the next step when requests should not
            // wait on each other.
            db = connect(databaseUrl);
            try (Statement s = db.createStatement()) {
                s.execute("SELECT 1");
            }
        } catch (SQLException | IllegalArgumentException e) {
            fail("cannot connect to PostgreSQL at DATABASE_URL: " + e.getMessage());
        }

        String host = System.getenv().getOrDefault("HOST", "127.0.0.1");
        int port = Integer.parseInt(System.getenv().getOrDefault("PORT", "8080"));
        HttpServer server = HttpServer.create(new InetSocketAddress(host, port), 0);
        server.createContext("/", Main::handle);
        server.setExecutor(Executors.newFixedThreadPool(16));
        server.start();
        System.out.println("listening on " + host + ":" + port);
    }

    static void handle(HttpExchange exchange) throws IOException {
        String method = exchange.getRequestMethod();
        String path = exchange.getRequestURI().getPath();
        int status;
        try (InputStream body = exchange.getRequestBody()) {
            body.readAllBytes(); // read the whole body, so the connection stays usable
        }
        if (path.equals("/healthz") && (method.equals("GET") || method.equals("HEAD"))) {
            status = send(exchange, 200, "application/json", "{\"status\":\"ok\"}");
        } else {
            String detail = method + " " + path + " is not implemented yet";
            status = send(exchange, 501, "application/problem+json",
                    "{\"type\":\"about:blank\",\"title\":\"Not Implemented\",\"status\":501,"
                            + "\"detail\":\"" + jsonEscape(detail) + "\"}");
        }
        System.out.println(method + " " + path + " " + status);
    }

    static int send(HttpExchange exchange, int status, String contentType, String body)
            throws IOException {
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        exchange.getResponseHeaders().set("Content-Type", contentType);
        if (exchange.getRequestMethod().equals("HEAD")) {
            exchange.getResponseHeaders().set("Content-Length", String.valueOf(bytes.length));
            exchange.sendResponseHeaders(status, -1);
        } else {
            exchange.sendResponseHeaders(status, bytes.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(bytes);
            }
        }
        exchange.close();
        return status;
    }

    /** Turns postgres://user:password@host:port/db?params into a JDBC connection. */
    static Connection connect(String databaseUrl) throws SQLException {
        URI uri = URI.create(databaseUrl);
        if (uri.getHost() == null) {
            throw new IllegalArgumentException("not a postgres://user:password@host:port/db URL");
        }
        String jdbc = "jdbc:postgresql://" + uri.getHost()
                + (uri.getPort() > 0 ? ":" + uri.getPort() : "") + uri.getRawPath()
                + (uri.getRawQuery() != null ? "?" + uri.getRawQuery() : "");
        Properties props = new Properties();
        if (uri.getRawUserInfo() != null) {
            String[] parts = uri.getRawUserInfo().split(":", 2);
            props.setProperty("user", URLDecoder.decode(parts[0], StandardCharsets.UTF_8));
            if (parts.length == 2) {
                props.setProperty("password", URLDecoder.decode(parts[1], StandardCharsets.UTF_8));
            }
        }
        return DriverManager.getConnection(jdbc, props);
    }

    static String jsonEscape(String s) {
        StringBuilder out = new StringBuilder();
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.toString();
    }

    static void fail(String message) {
        System.err.println(message);
        System.exit(1);
    }
}
