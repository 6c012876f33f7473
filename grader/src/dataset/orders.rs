//! The `orders` generator: customers and their orders, skewed the way real shops are.
//!
//! - `customers (id, email, name, created_at)`: emails in mixed case (`Amber.Otter42@Example.com`),
//!   so a case-insensitive lookup needs `lower(email)`.
//! - `orders (id, customer_id, status, created_at, total_cents)`: ids grow with `created_at`
//!   (rows are inserted in time order, as a live shop would), except a `backfilled` share
//!   imported late, whose ids follow all the others'; customers follow a power law (a
//!   few customers own thousands of orders, most own one or two); statuses depend on age (recent
//!   orders are `pending` or `shipped`, old ones mostly `delivered`).
//!
//! Timestamps end at a fixed instant (2026-01-01T00:00:00Z), not at "now", so a seed replays.

use std::fmt::Write;

use futures_util::SinkExt;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

/// 2026-01-01T00:00:00Z: the newest order is just before it.
const END: u64 = 1_767_225_600;
/// Bytes per `COPY` chunk.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersParams {
    #[serde(default = "default_customers")]
    pub customers: u64,
    #[serde(default = "default_orders")]
    pub orders: u64,
    /// Days of order history.
    #[serde(default = "default_days")]
    pub days: u64,
    /// Power-law exponent of orders per customer: 1 is uniform; 3 gives the largest customer
    /// about 2.7% of all orders.
    #[serde(default = "default_skew")]
    pub skew: f64,
    /// Put before both table names (`shop_` loads `shop_customers` and `shop_orders`), so that
    /// two exercises with this generator can share one service's database.
    #[serde(default)]
    pub table_prefix: String,
    /// The share of orders (0 to 0.5) imported late from an older system: their times are
    /// spread over the whole history like the others', but their ids come after every other
    /// order's. With it, ids no longer follow `created_at`, so a service that orders by `id`
    /// where the task says `created_at` answers differently. 0 (the default) loads ids in time
    /// order, and the same rows as before the option existed.
    #[serde(default)]
    pub backfilled: f64,
}

fn default_customers() -> u64 {
    50_000
}
fn default_orders() -> u64 {
    200_000
}
fn default_days() -> u64 {
    730
}
fn default_skew() -> f64 {
    3.0
}

impl OrdersParams {
    pub fn parse(v: toml::Value) -> Result<Self, String> {
        let p: OrdersParams = v
            .try_into()
            .map_err(|e: toml::de::Error| format!("[dataset.params]: {}", e.message()))?;
        if !(1..=10_000_000).contains(&p.customers) || !(1..=50_000_000).contains(&p.orders) {
            return Err(
                "[dataset.params]: `customers` must be 1 to 10,000,000 and `orders` 1 to 50,000,000"
                    .into(),
            );
        }
        let identifier = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
        if !p.table_prefix.chars().all(identifier)
            || p.table_prefix.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(format!(
                "[dataset.params]: `table_prefix` \"{}\" must be lower-case letters, digits and `_`, not starting with a digit",
                p.table_prefix
            ));
        }
        if !(1..=36_500).contains(&p.days) || !(1.0..=10.0).contains(&p.skew) {
            return Err(
                "[dataset.params]: `days` must be 1 to 36,500 and `skew` 1.0 to 10.0".into(),
            );
        }
        if !(0.0..=0.5).contains(&p.backfilled) {
            return Err(format!(
                "[dataset.params]: `backfilled` {} must be a share from 0 to 0.5 (0.05 imports one order in twenty late)",
                p.backfilled
            ));
        }
        Ok(p)
    }
}

const FIRST: &[&str] = &[
    "Amber", "Basil", "Cedar", "Dahlia", "Ember", "Fern", "Hazel", "Iris", "Jasper", "Juniper",
    "Laurel", "Maple", "Olive", "Rowan", "Sage", "Willow",
];
const LAST: &[&str] = &[
    "Otter", "Finch", "Heron", "Badger", "Lynx", "Marten", "Plover", "Raven", "Stoat", "Wren",
    "Crane", "Falcon",
];
const DOMAINS: &[&str] = &[
    "Example.com",
    "Mail.Example.org",
    "EXAMPLE.net",
    "example.io",
];

/// Appends `secs` (Unix time) as `YYYY-MM-DD hh:mm:ss+00`, without allocating (this runs once
/// per row; a formatting library made loading twice as slow in debug builds).
fn push_timestamp(buf: &mut String, secs: u64) {
    use std::fmt::Write;
    // Howard Hinnant's civil_from_days.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        buf,
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}+00",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60
    );
}

/// Copies `rows` (text format lines) into `copy` in chunks.
async fn copy_rows(
    client: &tokio_postgres::Client,
    copy: &str,
    mut next: impl FnMut(&mut String) -> bool,
) -> Result<(), String> {
    let sink = client
        .copy_in::<_, bytes::Bytes>(copy)
        .await
        .map_err(|e| format!("{copy}: {}", super::db_error(&e)))?;
    futures_util::pin_mut!(sink);
    let mut buf = String::with_capacity(CHUNK + 256);
    loop {
        let more = next(&mut buf);
        if buf.len() >= CHUNK || !more {
            let chunk = bytes::Bytes::from(std::mem::take(&mut buf).into_bytes());
            sink.send(chunk)
                .await
                .map_err(|e| format!("{copy}: {}", super::db_error(&e)))?;
            buf.reserve(CHUNK + 256);
        }
        if !more {
            break;
        }
    }
    sink.as_mut()
        .finish()
        .await
        .map_err(|e| format!("{copy}: {}", super::db_error(&e)))?;
    Ok(())
}

/// Loads both tables; returns (table, rows) in load order.
pub async fn load(
    client: &tokio_postgres::Client,
    p: &OrdersParams,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<(String, u64)>, String> {
    let span = p.days * 86_400;
    let start = END - span;
    let customers = format!("{}customers", p.table_prefix);
    let orders = format!("{}orders", p.table_prefix);

    // Customers.
    let mut id = 0u64;
    let mut crng = rng.clone();
    copy_rows(
        client,
        &format!("COPY {customers} (id, email, name, created_at) FROM STDIN"),
        |buf| {
            id += 1;
            let first = FIRST[crng.gen_range(0..FIRST.len())];
            let last = LAST[crng.gen_range(0..LAST.len())];
            let domain = DOMAINS[crng.gen_range(0..DOMAINS.len())];
            let created = start - crng.gen_range(0..365 * 86_400);
            let _ = write!(buf, "{id}\t{first}.{last}{id}@{domain}\t{first} {last}\t");
            push_timestamp(buf, created);
            buf.push('\n');
            id < p.customers
        },
    )
    .await?;
    // Keep the orders' stream independent of how many draws the customers took.
    let _ = rng.gen::<u64>();

    // Which customer owns the k-th "rank": a seeded permutation, so the largest customer differs
    // from seed to seed.
    let mut owners: Vec<u64> = (1..=p.customers).collect();
    owners.shuffle(rng);
    let mut times: Vec<u64> = (0..p.orders).map(|_| rng.gen_range(0..span)).collect();
    times.sort_unstable();

    let ids = order_ids(p, rng);

    let mut i = 0usize;
    copy_rows(
        client,
        &format!("COPY {orders} (id, customer_id, status, created_at, total_cents) FROM STDIN"),
        |buf| {
            let created = start + times[i];
            let u: f64 = rng.gen();
            let rank = ((p.customers as f64) * u.powf(p.skew)) as usize;
            let customer = owners[rank.min(owners.len() - 1)];
            let age_days = (END - created) / 86_400;
            let roll = rng.gen_range(0..100);
            let status = if age_days < 30 {
                match roll {
                    0..=49 => "pending",
                    50..=84 => "shipped",
                    _ => "delivered",
                }
            } else {
                match roll {
                    0..=81 => "delivered",
                    82..=91 => "cancelled",
                    92..=96 => "refunded",
                    _ => "shipped",
                }
            };
            let u2: f64 = rng.gen();
            let total = 500 + (u2 * u2 * 49_500.0) as u64;
            let id = ids[i];
            i += 1;
            let _ = write!(buf, "{id}\t{customer}\t{status}\t");
            push_timestamp(buf, created);
            let _ = writeln!(buf, "\t{total}");
            i < times.len()
        },
    )
    .await?;
    Ok(vec![(customers, p.customers), (orders, p.orders)])
}

/// The id of each order, in time order: 1, 2, 3, ... unless some are `backfilled`, whose ids
/// then follow all the others' (still in time order among themselves).
fn order_ids(p: &OrdersParams, rng: &mut ChaCha8Rng) -> Vec<u64> {
    let count = p.orders as usize;
    if p.backfilled <= 0.0 {
        // No draw at all: the rest of the data is what it always was.
        return (1..=p.orders).collect();
    }
    let late: Vec<bool> = (0..count).map(|_| rng.gen_bool(p.backfilled)).collect();
    let mut next_on_time = 1u64;
    let mut next_late = 1 + late.iter().filter(|l| !**l).count() as u64;
    late.iter()
        .map(|&late| {
            let counter = if late {
                &mut next_late
            } else {
                &mut next_on_time
            };
            *counter += 1;
            *counter - 1
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn params(backfilled: f64) -> OrdersParams {
        let raw: toml::Value = format!("orders = 1000\nbackfilled = {backfilled:?}")
            .parse()
            .unwrap();
        OrdersParams::parse(raw).unwrap()
    }

    #[test]
    fn without_backfill_ids_follow_time_and_take_no_draw() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let ids = order_ids(&params(0.0), &mut rng);
        assert_eq!(ids, (1..=1000).collect::<Vec<_>>());
        assert_eq!(rng, ChaCha8Rng::seed_from_u64(7));
    }

    #[test]
    fn backfilled_orders_take_the_last_ids_in_time_order() {
        let ids = order_ids(&params(0.1), &mut ChaCha8Rng::seed_from_u64(7));
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=1000).collect::<Vec<_>>(), "every id once");
        // The late ones are the ids after the last on-time one: one in ten, give or take.
        let on_time: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|&id| id <= 1000 - 100 - 40)
            .collect();
        let late: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|&id| id > 1000 - 100 + 40)
            .collect();
        assert!(
            on_time.windows(2).all(|w| w[0] < w[1]),
            "on time: ids follow time"
        );
        assert!(
            late.windows(2).all(|w| w[0] < w[1]),
            "late: ids follow time among themselves"
        );
        let inversions = ids.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(
            (50..=150).contains(&inversions),
            "{inversions} orders followed by an older id"
        );
    }

    #[test]
    fn a_backfill_share_past_half_is_refused() {
        let err = OrdersParams::parse("backfilled = 0.6".parse().unwrap()).unwrap_err();
        assert!(err.contains("`backfilled` 0.6"), "{err}");
    }

    #[test]
    fn timestamps_match_rfc3339() {
        for secs in [
            0,
            END,
            END - 1,
            951_782_400, /* 2000-02-29 */
            1_709_208_000,
        ] {
            let mut ours = String::new();
            push_timestamp(&mut ours, secs);
            let theirs = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
            )
            .to_string();
            assert_eq!(ours.replace(' ', "T").replace("+00", "Z"), theirs);
        }
    }
}
