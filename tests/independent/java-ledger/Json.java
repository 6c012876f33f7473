import java.math.BigDecimal;
import java.math.BigInteger;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * A small, strict JSON (RFC 8259) parser and writer.
 *
 * Values: objects are {@code LinkedHashMap<String,Object>}, arrays {@code ArrayList<Object>},
 * strings {@code String}, numbers {@link Num} (the literal as written, so an integer is never
 * squeezed through a double), booleans {@code Boolean}, null {@link #NULL}.
 */
final class Json {
    private Json() {}

    /** JSON null (a Java null means "member absent"). */
    static final Object NULL = new Object() {
        @Override public String toString() { return "null"; }
    };

    /** A JSON number, kept as its literal text. */
    static final class Num {
        final String raw;
        Num(String raw) { this.raw = raw; }
        /** True when the literal has no fraction and no exponent: {@code 12}, not {@code 12.0} or {@code 1e3}. */
        boolean isIntegerLiteral() {
            return raw.indexOf('.') < 0 && raw.indexOf('e') < 0 && raw.indexOf('E') < 0;
        }
        BigInteger bigInteger() { return new BigInteger(raw); }
        BigDecimal decimal() { return new BigDecimal(raw); }
        @Override public String toString() { return raw; }
    }

    static final class ParseException extends Exception {
        ParseException(String msg, int pos) { super(msg + " at offset " + pos); }
    }

    // ------------------------------------------------------------------ parser

    static Object parse(String text) throws ParseException {
        Parser p = new Parser(text);
        p.ws();
        Object v = p.value(0);
        p.ws();
        if (p.i != text.length()) throw new ParseException("unexpected trailing data", p.i);
        return v;
    }

    private static final class Parser {
        private static final int MAX_DEPTH = 256;
        final String s;
        int i;
        Parser(String s) { this.s = s; }

        void ws() {
            while (i < s.length()) {
                char c = s.charAt(i);
                if (c == ' ' || c == '\t' || c == '\n' || c == '\r') i++; else break;
            }
        }

        ParseException err(String m) { return new ParseException(m, i); }

        Object value(int depth) throws ParseException {
            if (depth > MAX_DEPTH) throw err("nesting too deep");
            if (i >= s.length()) throw err("unexpected end of input");
            char c = s.charAt(i);
            switch (c) {
                case '{': return object(depth);
                case '[': return array(depth);
                case '"': return string();
                case 't': literal("true"); return Boolean.TRUE;
                case 'f': literal("false"); return Boolean.FALSE;
                case 'n': literal("null"); return NULL;
                default:
                    if (c == '-' || (c >= '0' && c <= '9')) return number();
                    throw err("unexpected character '" + c + "'");
            }
        }

        void literal(String word) throws ParseException {
            if (!s.startsWith(word, i)) throw err("invalid literal");
            i += word.length();
        }

        Map<String, Object> object(int depth) throws ParseException {
            Map<String, Object> m = new LinkedHashMap<>();
            i++; // {
            ws();
            if (i < s.length() && s.charAt(i) == '}') { i++; return m; }
            while (true) {
                ws();
                if (i >= s.length() || s.charAt(i) != '"') throw err("expected a member name");
                String k = string();
                ws();
                if (i >= s.length() || s.charAt(i) != ':') throw err("expected ':'");
                i++;
                ws();
                Object v = value(depth + 1);
                m.put(k, v); // a duplicate name: the last one wins, as in most parsers
                ws();
                if (i >= s.length()) throw err("unterminated object");
                char c = s.charAt(i++);
                if (c == '}') return m;
                if (c != ',') throw err("expected ',' or '}'");
            }
        }

        List<Object> array(int depth) throws ParseException {
            List<Object> a = new ArrayList<>();
            i++; // [
            ws();
            if (i < s.length() && s.charAt(i) == ']') { i++; return a; }
            while (true) {
                ws();
                a.add(value(depth + 1));
                ws();
                if (i >= s.length()) throw err("unterminated array");
                char c = s.charAt(i++);
                if (c == ']') return a;
                if (c != ',') throw err("expected ',' or ']'");
            }
        }

        String string() throws ParseException {
            i++; // opening quote
            StringBuilder b = new StringBuilder();
            while (true) {
                if (i >= s.length()) throw err("unterminated string");
                char c = s.charAt(i++);
                if (c == '"') return b.toString();
                if (c < 0x20) throw err("control character in string");
                if (c != '\\') { b.append(c); continue; }
                if (i >= s.length()) throw err("unterminated escape");
                char e = s.charAt(i++);
                switch (e) {
                    case '"': b.append('"'); break;
                    case '\\': b.append('\\'); break;
                    case '/': b.append('/'); break;
                    case 'b': b.append('\b'); break;
                    case 'f': b.append('\f'); break;
                    case 'n': b.append('\n'); break;
                    case 'r': b.append('\r'); break;
                    case 't': b.append('\t'); break;
                    case 'u': {
                        if (i + 4 > s.length()) throw err("short \\u escape");
                        int cp = 0;
                        for (int k = 0; k < 4; k++) {
                            int d = Character.digit(s.charAt(i + k), 16);
                            if (d < 0) throw err("bad hex digit in \\u escape");
                            cp = cp * 16 + d;
                        }
                        i += 4;
                        b.append((char) cp); // surrogate pairs arrive as two escapes and join up here
                        break;
                    }
                    default: throw err("invalid escape '\\" + e + "'");
                }
            }
        }

        Num number() throws ParseException {
            int start = i;
            if (s.charAt(i) == '-') i++;
            if (i >= s.length()) throw err("bad number");
            char c = s.charAt(i);
            if (c == '0') {
                i++;
            } else if (c >= '1' && c <= '9') {
                while (i < s.length() && isDigit(s.charAt(i))) i++;
            } else {
                throw err("bad number");
            }
            if (i < s.length() && s.charAt(i) == '.') {
                i++;
                int d = i;
                while (i < s.length() && isDigit(s.charAt(i))) i++;
                if (i == d) throw err("bad fraction");
            }
            if (i < s.length() && (s.charAt(i) == 'e' || s.charAt(i) == 'E')) {
                i++;
                if (i < s.length() && (s.charAt(i) == '+' || s.charAt(i) == '-')) i++;
                int d = i;
                while (i < s.length() && isDigit(s.charAt(i))) i++;
                if (i == d) throw err("bad exponent");
            }
            return new Num(s.substring(start, i));
        }

        static boolean isDigit(char c) { return c >= '0' && c <= '9'; }
    }

    // ------------------------------------------------------------------ writer

    static String write(Object v) {
        StringBuilder b = new StringBuilder();
        write(b, v, false);
        return b.toString();
    }

    /** Canonical form: object members sorted by name, numbers normalised. Used for fingerprints. */
    static String canonical(Object v) {
        StringBuilder b = new StringBuilder();
        write(b, v, true);
        return b.toString();
    }

    @SuppressWarnings("unchecked")
    private static void write(StringBuilder b, Object v, boolean canonical) {
        if (v == null || v == NULL) {
            b.append("null");
        } else if (v instanceof String) {
            quote(b, (String) v);
        } else if (v instanceof Boolean || v instanceof Long || v instanceof Integer || v instanceof BigInteger) {
            b.append(v);
        } else if (v instanceof Num) {
            Num n = (Num) v;
            if (!canonical) b.append(n.raw);
            else if (n.isIntegerLiteral()) b.append(n.bigInteger());
            else {
                BigDecimal d = n.decimal().stripTrailingZeros();
                b.append(d.scale() <= 0 ? d.toBigInteger().toString() : d.toString());
            }
        } else if (v instanceof Map) {
            Map<String, Object> m = (Map<String, Object>) v;
            if (canonical) m = new TreeMap<>(m);
            b.append('{');
            Iterator<Map.Entry<String, Object>> it = m.entrySet().iterator();
            while (it.hasNext()) {
                Map.Entry<String, Object> e = it.next();
                quote(b, e.getKey());
                b.append(':');
                write(b, e.getValue(), canonical);
                if (it.hasNext()) b.append(',');
            }
            b.append('}');
        } else if (v instanceof List) {
            b.append('[');
            List<Object> l = (List<Object>) v;
            for (int k = 0; k < l.size(); k++) {
                if (k > 0) b.append(',');
                write(b, l.get(k), canonical);
            }
            b.append(']');
        } else {
            throw new IllegalArgumentException("cannot write " + v.getClass());
        }
    }

    static void quote(StringBuilder b, String s) {
        b.append('"');
        for (int k = 0; k < s.length(); k++) {
            char c = s.charAt(k);
            switch (c) {
                case '"': b.append("\\\""); break;
                case '\\': b.append("\\\\"); break;
                case '\n': b.append("\\n"); break;
                case '\r': b.append("\\r"); break;
                case '\t': b.append("\\t"); break;
                case '\b': b.append("\\b"); break;
                case '\f': b.append("\\f"); break;
                default:
                    if (c < 0x20 || c == 0x7f || c == '\u2028' || c == '\u2029'
                            || Character.isSurrogate(c) && !pairedSurrogate(s, k)) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
            }
        }
        b.append('"');
    }

    private static boolean pairedSurrogate(String s, int k) {
        char c = s.charAt(k);
        if (Character.isHighSurrogate(c)) return k + 1 < s.length() && Character.isLowSurrogate(s.charAt(k + 1));
        return k > 0 && Character.isHighSurrogate(s.charAt(k - 1));
    }

    /** Builds an ordered object from name/value pairs. */
    static Map<String, Object> obj(Object... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int k = 0; k < kv.length; k += 2) m.put((String) kv[k], kv[k + 1]);
        return m;
    }
}
