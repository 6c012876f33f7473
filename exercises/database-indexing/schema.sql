-- The tables of the database-indexing exercise. The grader creates them and loads about 250,000
-- seeded rows (exercise.toml, [dataset]) before your service starts. They have primary keys and
-- nothing else: the indexes are yours to add, in migrations your service runs at start-up.
-- Your migrations may repeat these statements as CREATE TABLE IF NOT EXISTS.

CREATE TABLE customers (
    id          bigint PRIMARY KEY,
    email       text NOT NULL,          -- mixed case, e.g. Amber.Otter42@Example.com
    name        text NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE TABLE orders (
    id           bigint PRIMARY KEY,    -- grows with created_at
    customer_id  bigint NOT NULL REFERENCES customers (id),
    status       text NOT NULL,         -- pending, shipped, delivered, cancelled, refunded
    created_at   timestamptz NOT NULL,
    total_cents  bigint NOT NULL
);
