import java.math.BigDecimal;
import java.sql.Array;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.Date;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Timestamp;
import java.sql.Types;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.TimeZone;
import java.util.TreeSet;

/**
 * pgjdbc (DBeaver, Tableau, ...) compatibility test for Panorama.
 *
 * <pre>
 * javac -cp /usr/share/java/postgresql.jar -d OUT tests/clients/JdbcClient.java
 * java -cp OUT:/usr/share/java/postgresql.jar JdbcClient HOST PORT [--golden] [--tables=all|s.t,s.t]
 * </pre>
 *
 * Without --golden it runs behaviour checks (prepared statements in text and binary
 * mode, fetchSize portals, SQL cursors, metadata calls) and exits 1 if any fails.
 * With --golden it prints a sorted JSON dump of DatabaseMetaData rows (one field a line)
 * for the relations of raw, cdp, system and analytics (or only those named with
 * --tables=schema.table,...), to be diffed against the same dump from a PostgreSQL
 * database loaded with tests/clients/golden_schema.sql:
 *
 * diff <(java ... JdbcClient PGHOST PGPORT --golden) <(java ... JdbcClient 127.0.0.1 PANORAMA_PORT --golden)
 *
 * The behaviour checks also pass against such a PostgreSQL database (the prepared
 * table reads need a few rows in raw.orders, raw.customers and cdp.profiles).
 */
public final class JdbcClient {

    private static final List<String> SCHEMAS = List.of("raw", "cdp", "system", "analytics");
    /** Tables whose catalog entries the behaviour checks assert on. */
    private static final List<String> CHECKED_TABLES =
            List.of("raw.customers", "raw.orders", "cdp.profiles");

    /** URL suffixes: each behaviour check runs once per driver configuration. */
    private static final Map<String, String> MODES = orderedMap(
            "default", "",
            "prepareThreshold=1", "&prepareThreshold=1",
            "prepareThreshold=1+binaryTransfer", "&prepareThreshold=1&binaryTransfer=true",
            "simple", "&preferQueryMode=simple");

    private static final int ITERATIONS = 10;

    private final String baseUrl;
    private final List<String> failures = new ArrayList<>();

    private JdbcClient(String host, String port) {
        this.baseUrl = "jdbc:postgresql://" + host + ":" + port
                + "/panorama?user=panorama&password=panorama&ApplicationName=JdbcClient";
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: JdbcClient HOST PORT [--golden] [--tables=all|schema.table,...]");
            System.exit(2);
        }
        // Deterministic client time zone (it is also sent as the TimeZone startup parameter).
        TimeZone.setDefault(TimeZone.getTimeZone("UTC"));
        JdbcClient client = new JdbcClient(args[0], args[1]);
        boolean golden = false;
        Set<String> tables = null; // all relations of SCHEMAS
        for (int i = 2; i < args.length; i++) {
            if (args[i].equals("--golden")) {
                golden = true;
            } else if (args[i].startsWith("--tables=")) {
                String list = args[i].substring("--tables=".length());
                tables = list.equals("all") ? null : new LinkedHashSet<>(Arrays.asList(list.split(",")));
            } else {
                System.err.println("unknown argument " + args[i]);
                System.exit(2);
            }
        }
        if (golden) {
            try (Connection conn = client.connect("")) {
                for (String line : goldenDump(conn, tables)) {
                    System.out.println(line);
                }
            }
            return;
        }
        client.runAll();
    }

    // ------------------------------------------------------------------ behaviour checks

    private void runAll() {
        checkMetadata();
        for (Map.Entry<String, String> mode : MODES.entrySet()) {
            check("prepared-literals[" + mode.getKey() + "]", () -> checkPreparedLiterals(mode.getValue()));
            check("prepared-any-array[" + mode.getKey() + "]", () -> checkAnyArray(mode.getValue()));
            check("prepared-table-types[" + mode.getKey() + "]", () -> checkTableTypes(mode.getValue()));
            check("fetch-size[" + mode.getKey() + "]", () -> checkFetchSize(mode.getValue()));
        }
        check("sql-cursor", this::checkSqlCursor);

        if (failures.isEmpty()) {
            System.out.println("ALL CHECKS PASSED");
            return;
        }
        System.out.println();
        System.out.println(failures.size() + " CHECK(S) FAILED:");
        failures.forEach(f -> System.out.println("  - " + f));
        System.exit(1);
    }

    private interface Body {
        void run() throws Exception;
    }

    private void check(String name, Body body) {
        try {
            body.run();
            System.out.println("PASS " + name);
        } catch (Throwable e) {
            String message = name + ": " + describe(e);
            System.out.println("FAIL " + message);
            failures.add(message);
        }
    }

    private static String describe(Throwable e) {
        StringBuilder sb = new StringBuilder(e.getClass().getSimpleName()).append(": ").append(e.getMessage());
        if (e instanceof SQLException sql && sql.getSQLState() != null) {
            sb.append(" [SQLState ").append(sql.getSQLState()).append(']');
        }
        for (Throwable c = e.getCause(); c != null && c != e; c = c.getCause()) {
            sb.append(" / caused by ").append(c.getClass().getSimpleName()).append(": ").append(c.getMessage());
        }
        return sb.toString().replaceAll("\\s*\\n\\s*", " | ");
    }

    private Connection connect(String urlSuffix) throws SQLException {
        return DriverManager.getConnection(baseUrl + urlSuffix);
    }

    /** DatabaseMetaData calls DBeaver/Tableau make while browsing the catalog. */
    private void checkMetadata() {
        check("metadata-product", () -> withMetadata(md -> {
            assertEquals("getDatabaseProductName()", "PostgreSQL", md.getDatabaseProductName());
            System.out.println("  product version: " + md.getDatabaseProductVersion()
                    + " (major " + md.getDatabaseMajorVersion() + "." + md.getDatabaseMinorVersion() + ")"
                    + ", driver " + md.getDriverVersion());
        }));
        check("metadata-schemas", () -> withMetadata(md -> {
            Set<String> schemas = new LinkedHashSet<>();
            try (ResultSet rs = md.getSchemas()) {
                while (rs.next()) {
                    schemas.add(rs.getString("TABLE_SCHEM"));
                }
            }
            for (String schema : SCHEMAS) {
                check(schemas.contains(schema), "getSchemas() lacks %s; got %s", schema, schemas);
            }
        }));
        for (String qualified : CHECKED_TABLES) {
            String schema = qualified.split("\\.")[0];
            String table = qualified.split("\\.")[1];
            check("metadata-tables[" + qualified + "]", () -> withMetadata(md -> {
                try (ResultSet rs = md.getTables(null, schema, table, null)) {
                    check(rs.next(), "getTables(null, %s, %s, null) returned no row", schema, table);
                    assertEquals("TABLE_TYPE of " + qualified, "TABLE", rs.getString("TABLE_TYPE"));
                }
                int expectedPosition = 1;
                try (ResultSet rs = md.getColumns(null, schema, table, "%")) {
                    while (rs.next()) {
                        assertEquals("ORDINAL_POSITION of " + qualified + "." + rs.getString("COLUMN_NAME"),
                                expectedPosition++, rs.getInt("ORDINAL_POSITION"));
                    }
                }
                check(expectedPosition > 1, "getColumns(null, %s, %s, %%) returned no row", schema, table);
            }));
        }
        check("metadata-column-types", () -> withMetadata(md -> {
            expectColumn(md, "raw", "customers", "customer_id", Types.VARCHAR, "text", DatabaseMetaData.columnNoNulls);
            expectColumn(md, "raw", "customers", "birth_date", Types.DATE, "date", DatabaseMetaData.columnNullable);
            expectColumn(md, "raw", "customers", "newsletter", Types.BIT, "bool", DatabaseMetaData.columnNullable);
            expectColumn(md, "raw", "customers", "created_at", Types.TIMESTAMP, "timestamptz",
                    DatabaseMetaData.columnNullable);
            expectColumn(md, "raw", "orders", "item_count", Types.BIGINT, "int8", DatabaseMetaData.columnNoNulls);
            expectColumn(md, "cdp", "profiles", "emails", Types.ARRAY, "_text", DatabaseMetaData.columnNullable);
        }));
        check("metadata-numeric-precision", () -> withMetadata(md -> {
            try (ResultSet rs = md.getColumns(null, "raw", "orders", "amount")) {
                check(rs.next(), "getColumns(raw.orders.amount) returned no row");
                assertEquals("raw.orders.amount DATA_TYPE", Types.NUMERIC, rs.getInt("DATA_TYPE"));
                assertEquals("raw.orders.amount COLUMN_SIZE (precision)", 12, rs.getInt("COLUMN_SIZE"));
                assertEquals("raw.orders.amount DECIMAL_DIGITS (scale)", 2, rs.getInt("DECIMAL_DIGITS"));
            }
        }));
        check("metadata-views", () -> withMetadata(md -> {
            Set<String> viaSql = new TreeSet<>();
            try (Statement st = md.getConnection().createStatement();
                 ResultSet rs = st.executeQuery("SELECT table_schema || '.' || table_name FROM information_schema.tables"
                         + " WHERE table_type = 'VIEW' AND table_schema = 'analytics'")) {
                while (rs.next()) {
                    viaSql.add(rs.getString(1));
                }
            }
            Set<String> viaMetadata = new TreeSet<>();
            try (ResultSet rs = md.getTables(null, "analytics", "%", new String[] {"VIEW"})) {
                while (rs.next()) {
                    viaMetadata.add(rs.getString("TABLE_SCHEM") + "." + rs.getString("TABLE_NAME"));
                }
            }
            assertEquals("getTables(null, analytics, %, {VIEW}) vs information_schema.tables", viaSql, viaMetadata);
        }));
        check("metadata-getTypeInfo", () -> withMetadata(md -> check(
                countRows(md.getTypeInfo()) > 0, "getTypeInfo() returned no row")));
        // No keys or indexes exist: these must return empty result sets, not fail.
        check("metadata-getPrimaryKeys", () -> withMetadata(md -> assertEquals(
                "getPrimaryKeys(raw.customers) rows", 0, countRows(md.getPrimaryKeys(null, "raw", "customers")))));
        check("metadata-getImportedKeys", () -> withMetadata(md -> assertEquals(
                "getImportedKeys(raw.orders) rows", 0, countRows(md.getImportedKeys(null, "raw", "orders")))));
        check("metadata-getExportedKeys", () -> withMetadata(md -> assertEquals(
                "getExportedKeys(raw.customers) rows", 0, countRows(md.getExportedKeys(null, "raw", "customers")))));
        check("metadata-getIndexInfo", () -> withMetadata(md -> assertEquals(
                "getIndexInfo(raw.customers) rows", 0, countRows(md.getIndexInfo(null, "raw", "customers", false, true)))));
    }

    private interface MetadataBody {
        void run(DatabaseMetaData md) throws SQLException;
    }

    private void withMetadata(MetadataBody body) throws SQLException {
        try (Connection conn = connect("")) {
            body.run(conn.getMetaData());
        }
    }

    private static void expectColumn(DatabaseMetaData md, String schema, String table, String column,
                                     int dataType, String typeName, int nullable) throws SQLException {
        String what = schema + "." + table + "." + column;
        try (ResultSet rs = md.getColumns(null, schema, table, column)) {
            check(rs.next(), "getColumns(null, %s, %s, %s) returned no row", schema, table, column);
            assertEquals(what + " DATA_TYPE", dataType, rs.getInt("DATA_TYPE"));
            assertEquals(what + " TYPE_NAME", typeName, rs.getString("TYPE_NAME"));
            assertEquals(what + " NULLABLE", nullable, rs.getInt("NULLABLE"));
        }
    }

    /**
     * One PreparedStatement with parameters of every common Java type, executed 10 times.
     * With the default prepareThreshold (5) pgjdbc switches from unnamed to named
     * server-side statements, and from text to binary results, on the 5th execution.
     */
    private void checkPreparedLiterals(String mode) throws SQLException {
        String sql = "SELECT CAST(? AS TEXT) AS s, CAST(? AS INTEGER) AS i, CAST(? AS BIGINT) AS l,"
                + " CAST(? AS DOUBLE PRECISION) AS d, CAST(? AS BOOLEAN) AS b, CAST(? AS DATE) AS dt,"
                + " CAST(? AS TIMESTAMP) AS ts, CAST(? AS TEXT) AS null_text, CAST(? AS INTEGER) AS null_int,"
                + " CAST(? AS NUMERIC(12, 2)) AS n";
        Date date = Date.valueOf("2024-02-29");
        Timestamp timestamp = Timestamp.valueOf("2024-02-29 13:45:56.123456");
        BigDecimal numeric = new BigDecimal("1234.50");
        try (Connection conn = connect(mode); PreparedStatement ps = conn.prepareStatement(sql)) {
            for (int iteration = 1; iteration <= ITERATIONS; iteration++) {
                String at = "iteration " + iteration + ": ";
                ps.setString(1, "héllo 'wörld'");
                ps.setInt(2, -2147483648);
                ps.setLong(3, 9007199254740993L);
                ps.setDouble(4, -1.5e-7);
                ps.setBoolean(5, true);
                ps.setDate(6, date);
                ps.setTimestamp(7, timestamp);
                ps.setNull(8, Types.VARCHAR);
                ps.setNull(9, Types.INTEGER);
                ps.setBigDecimal(10, numeric);
                try (ResultSet rs = ps.executeQuery()) {
                    check(rs.next(), "%sno row", at);
                    assertEquals(at + "text", "héllo 'wörld'", rs.getString("s"));
                    assertEquals(at + "integer", -2147483648, rs.getInt("i"));
                    assertEquals(at + "bigint", 9007199254740993L, rs.getLong("l"));
                    assertEquals(at + "double", -1.5e-7, rs.getDouble("d"));
                    assertEquals(at + "boolean", true, rs.getBoolean("b"));
                    assertEquals(at + "date", date, rs.getDate("dt"));
                    assertEquals(at + "timestamp", timestamp, rs.getTimestamp("ts"));
                    assertEquals(at + "null text", null, rs.getString("null_text"));
                    rs.getInt("null_int");
                    check(rs.wasNull(), "%snull integer: wasNull() is false", at);
                    assertEquals(at + "numeric", numeric, rs.getBigDecimal("n"));
                    check(!rs.next(), "%smore than one row", at);
                }
            }
        }
    }

    /** {@code = ANY(?)} bound to a text[] created with Connection.createArrayOf. */
    private void checkAnyArray(String mode) throws SQLException {
        String sql = "SELECT DISTINCT customer_id FROM raw.customers WHERE customer_id = ANY(?) ORDER BY customer_id";
        try (Connection conn = connect(mode); PreparedStatement ps = conn.prepareStatement(sql)) {
            for (int iteration = 1; iteration <= ITERATIONS; iteration++) {
                Array ids = conn.createArrayOf("text", new String[] {"C0000002", "C0000001", "no-such-id"});
                ps.setArray(1, ids);
                List<String> found = new ArrayList<>();
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        found.add(rs.getString(1));
                    }
                }
                assertEquals("iteration " + iteration + ": customer_id = ANY(text[])",
                        List.of("C0000001", "C0000002"), found);
            }
        }
    }

    /**
     * Real table columns (timestamptz, numeric, bigint, date, boolean, text[]) read through a
     * PreparedStatement 10 times; every iteration must decode exactly like a plain
     * simple-query read of the same row.
     */
    private void checkTableTypes(String mode) throws SQLException {
        String orderSql = "SELECT order_id, ordered_at, amount, item_count, date FROM raw.orders WHERE order_id = ?";
        String profileSql = "SELECT profile_id, emails, customer_ids, newsletter, birth_date, gross_revenue,"
                + " events, first_seen FROM cdp.profiles WHERE profile_id = ?";
        String orderId;
        String profileId;
        List<Object> expectedOrder;
        List<Object> expectedProfile;
        try (Connection reference = connect("&preferQueryMode=simple");
             Statement st = reference.createStatement()) {
            orderId = singleString(st, "SELECT order_id FROM raw.orders ORDER BY order_id LIMIT 1");
            profileId = singleString(st, "SELECT profile_id FROM cdp.profiles"
                    + " WHERE emails IS NOT NULL AND gross_revenue IS NOT NULL ORDER BY profile_id LIMIT 1");
            expectedOrder = readRow(st.executeQuery(orderSql.replace("?", quote(orderId))));
            expectedProfile = readRow(st.executeQuery(profileSql.replace("?", quote(profileId))));
        }
        try (Connection conn = connect(mode);
             PreparedStatement orders = conn.prepareStatement(orderSql);
             PreparedStatement profiles = conn.prepareStatement(profileSql)) {
            for (int iteration = 1; iteration <= ITERATIONS; iteration++) {
                orders.setString(1, orderId);
                assertEquals("iteration " + iteration + ": " + orderSql, expectedOrder, readRow(orders.executeQuery()));
                profiles.setString(1, profileId);
                assertEquals("iteration " + iteration + ": " + profileSql, expectedProfile,
                        readRow(profiles.executeQuery()));
            }
        }
    }

    /** Reads the single row of a result set with the getter matching each column's type. */
    private static List<Object> readRow(ResultSet rs) throws SQLException {
        try (rs) {
            check(rs.next(), "query returned no row");
            ResultSetMetaData md = rs.getMetaData();
            List<Object> row = new ArrayList<>();
            for (int i = 1; i <= md.getColumnCount(); i++) {
                Object value = switch (md.getColumnType(i)) {
                    case Types.TIMESTAMP, Types.TIMESTAMP_WITH_TIMEZONE -> rs.getTimestamp(i);
                    case Types.DATE -> rs.getDate(i);
                    case Types.NUMERIC, Types.DECIMAL -> rs.getBigDecimal(i);
                    case Types.BIGINT -> rs.getLong(i);
                    case Types.BIT, Types.BOOLEAN -> rs.getBoolean(i);
                    case Types.ARRAY -> {
                        Array array = rs.getArray(i);
                        yield array == null ? null : Arrays.asList((Object[]) array.getArray());
                    }
                    default -> rs.getString(i);
                };
                row.add(rs.wasNull() ? null : value);
                row.add(md.getColumnTypeName(i));
            }
            check(!rs.next(), "query returned more than one row");
            return row;
        }
    }

    /**
     * setFetchSize inside a transaction: pgjdbc binds a named portal and sends
     * Execute(portal, 1000) + Sync repeatedly until the portal is exhausted.
     */
    private void checkFetchSize(String mode) throws SQLException {
        try (Connection conn = connect(mode)) {
            conn.setAutoCommit(false);
            try (Statement st = conn.createStatement()) {
                st.setFetchSize(1000);
                long expected = 1;
                try (ResultSet rs = st.executeQuery("SELECT g FROM generate_series(1, 25000) AS t(g)")) {
                    while (rs.next()) {
                        assertEquals("generate_series row " + expected, expected, rs.getLong(1));
                        expected++;
                    }
                }
                assertEquals("generate_series(1, 25000) row count with fetchSize 1000", 25000L, expected - 1);
            }
            long events = tableExists(conn, "raw", "events") ? countOf(conn, "raw.events") : 0;
            if (events > 10_000) {
                try (PreparedStatement ps = conn.prepareStatement("SELECT * FROM raw.events")) {
                    ps.setFetchSize(1000);
                    assertEquals("SELECT * FROM raw.events row count with fetchSize 1000",
                            events, (long) countRows(ps.executeQuery()));
                }
            } else {
                System.out.println("  (raw.events holds " + events + " rows: table part of fetch-size skipped)");
            }
            conn.commit();
        }
    }

    /** DECLARE / FETCH / CLOSE as SQL statements inside a transaction. */
    private void checkSqlCursor() throws SQLException {
        try (Connection conn = connect("")) {
            conn.setAutoCommit(false);
            try (Statement st = conn.createStatement()) {
                st.execute("DECLARE c CURSOR FOR SELECT g FROM generate_series(1, 250) AS t(g) ORDER BY g");
                long next = 1;
                for (int batch : new int[] {100, 100, 50, 0}) {
                    int rows = 0;
                    try (ResultSet rs = st.executeQuery("FETCH 100 FROM c")) {
                        while (rs.next()) {
                            assertEquals("FETCH 100 FROM c value", next++, rs.getLong(1));
                            rows++;
                        }
                    }
                    assertEquals("FETCH 100 FROM c row count", batch, rows);
                }
                st.execute("CLOSE c");
            }
            conn.commit();
        }
    }

    // ------------------------------------------------------------------ golden metadata dump

    /**
     * Sorted JSON objects of DatabaseMetaData rows, restricted to {@code tables} (null = all).
     * A failing call is recorded as an "error" row so the rest of the dump still diffs.
     */
    private static List<String> goldenDump(Connection conn, Set<String> tables) throws SQLException {
        DatabaseMetaData md = conn.getMetaData();
        List<String> lines = new ArrayList<>();
        lines.add(json("product", "", orderedMap("name", md.getDatabaseProductName())));

        Set<String> interesting = new LinkedHashSet<>(SCHEMAS);
        interesting.addAll(List.of("public", "pg_catalog", "information_schema"));
        dumpRows(lines, "schema", "getSchemas()", md::getSchemas,
                row -> interesting.contains(String.valueOf(row.get("TABLE_SCHEM")))
                        ? String.valueOf(row.get("TABLE_SCHEM")) : null);
        for (String schema : SCHEMAS) {
            dumpRows(lines, "table", "getTables(null, " + schema + ", %, null)",
                    () -> md.getTables(null, schema, "%", null),
                    row -> selected(tables, row));
            dumpRows(lines, "column", "getColumns(null, " + schema + ", %, %)",
                    () -> md.getColumns(null, schema, "%", "%"),
                    row -> selected(tables, row) == null ? null : selected(tables, row)
                            + "#" + String.format("%03d", ((Number) row.get("ORDINAL_POSITION")).intValue()));
        }
        dumpRows(lines, "primary_key", "getPrimaryKeys(null, raw, customers)",
                () -> md.getPrimaryKeys(null, "raw", "customers"), row -> "raw.customers");
        dumpRows(lines, "imported_key", "getImportedKeys(null, raw, orders)",
                () -> md.getImportedKeys(null, "raw", "orders"), row -> "raw.orders");
        dumpRows(lines, "exported_key", "getExportedKeys(null, raw, customers)",
                () -> md.getExportedKeys(null, "raw", "customers"), row -> "raw.customers");
        dumpRows(lines, "index", "getIndexInfo(null, raw, customers, false, true)",
                () -> md.getIndexInfo(null, "raw", "customers", false, true), row -> "raw.customers");
        lines.sort(null);
        return lines;
    }

    private interface MetadataCall {
        ResultSet call() throws SQLException;
    }

    private interface RowKey {
        /** Sort key of a row, or null to leave the row out of the dump. */
        String of(Map<String, Object> row);
    }

    private static void dumpRows(List<String> lines, String kind, String call, MetadataCall metadataCall, RowKey key) {
        try (ResultSet rs = metadataCall.call()) {
            for (Map<String, Object> row : rows(rs)) {
                String k = key.of(row);
                if (k != null) {
                    lines.add(json(kind, k, row));
                }
            }
        } catch (SQLException e) {
            lines.add(json("error", call, orderedMap("sqlstate", e.getSQLState(), "message", e.getMessage())));
        }
    }

    private static String selected(Set<String> tables, Map<String, Object> row) {
        String name = row.get("TABLE_SCHEM") + "." + row.get("TABLE_NAME");
        return tables == null || tables.contains(name) ? name : null;
    }

    private static List<Map<String, Object>> rows(ResultSet rs) throws SQLException {
        ResultSetMetaData md = rs.getMetaData();
        List<Map<String, Object>> out = new ArrayList<>();
        while (rs.next()) {
            Map<String, Object> row = new LinkedHashMap<>();
            for (int i = 1; i <= md.getColumnCount(); i++) {
                row.put(md.getColumnLabel(i).toUpperCase(), rs.getObject(i));
            }
            out.add(row);
        }
        return out;
    }

    /**
     * One row as a JSON object: kind and key on the first line (the sort key), then one
     * field per line, so a line diff of two dumps names the row and the field that differ.
     */
    private static String json(String kind, String key, Map<String, Object> fields) {
        StringBuilder sb = new StringBuilder("{\"kind\":").append(jsonValue(kind))
                .append(",\"key\":").append(jsonValue(key));
        fields.forEach((k, v) -> sb.append(",\n ").append(jsonValue(k)).append(':').append(jsonValue(v)));
        return sb.append('}').toString();
    }

    private static String jsonValue(Object value) {
        if (value == null) {
            return "null";
        }
        if (value instanceof Number || value instanceof Boolean) {
            return value.toString();
        }
        StringBuilder sb = new StringBuilder("\"");
        for (char c : value.toString().toCharArray()) {
            switch (c) {
                case '"' -> sb.append("\\\"");
                case '\\' -> sb.append("\\\\");
                case '\n' -> sb.append("\\n");
                case '\t' -> sb.append("\\t");
                default -> sb.append(c < 0x20 ? String.format("\\u%04x", (int) c) : String.valueOf(c));
            }
        }
        return sb.append('"').toString();
    }

    // ------------------------------------------------------------------ helpers

    private static int countRows(ResultSet rs) throws SQLException {
        try (rs) {
            int n = 0;
            while (rs.next()) {
                n++;
            }
            return n;
        }
    }

    private static String singleString(Statement st, String sql) throws SQLException {
        try (ResultSet rs = st.executeQuery(sql)) {
            check(rs.next(), "no row from %s", sql);
            return rs.getString(1);
        }
    }

    private static long countOf(Connection conn, String table) throws SQLException {
        try (Statement st = conn.createStatement()) {
            return Long.parseLong(singleString(st, "SELECT count(*) FROM " + table));
        }
    }

    private static boolean tableExists(Connection conn, String schema, String table) throws SQLException {
        try (ResultSet rs = conn.getMetaData().getTables(null, schema, table, null)) {
            return rs.next();
        }
    }

    private static String quote(String literal) {
        return "'" + literal.replace("'", "''") + "'";
    }

    private static void check(boolean condition, String format, Object... args) {
        if (!condition) {
            throw new AssertionError(String.format(format, args));
        }
    }

    private static void assertEquals(String what, Object expected, Object actual) {
        if (!Objects.equals(expected, actual)) {
            throw new AssertionError(what + ": expected <" + expected + "> but got <" + actual + ">");
        }
    }

    @SuppressWarnings("unchecked")
    private static <V> Map<String, V> orderedMap(Object... keysAndValues) {
        Map<String, V> map = new LinkedHashMap<>();
        for (int i = 0; i < keysAndValues.length; i += 2) {
            map.put((String) keysAndValues[i], (V) keysAndValues[i + 1]);
        }
        return map;
    }
}
