//! Seeded random data. One seed per run; each check derives its own stream from the seed and its
//! id, so `--seed N` replays the same data even when only some checks run.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use super::template::Scope;

/// How a random value is generated from the run's seeded RNG.
#[derive(Debug, Clone)]
pub enum VarGen {
    /// `SKU-` and six upper-case hex digits.
    Sku,
    /// `count` lower-case words joined by spaces, first letter upper-cased.
    Words { count: usize },
    /// An integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// A random UUID v4 string.
    Uuid,
    /// `word.word<digits>@example.test`
    Email,
    /// A lower-case slug like `amber-otter-42`.
    Slug,
    /// One of the given strings.
    Pick(Vec<String>),
    /// `text` repeated `count` times: a value of an exact length, for probing a documented limit
    /// at the limit and one past it (`é` × 200 is 200 characters and 400 bytes).
    Repeat { text: String, count: usize },
    /// An access token signed by the grader's mock OpenID issuer, minted when a check that uses
    /// it runs (not here: it draws nothing from the stream, see `engine::tokens`).
    Jwt(Box<super::token::JwtSpec>),
}

impl VarGen {
    /// The token's declaration, for `gen = "jwt"`.
    pub fn jwt(&self) -> Option<&super::token::JwtSpec> {
        match self {
            VarGen::Jwt(spec) => Some(spec),
            _ => None,
        }
    }
}

/// A fresh seed for a run: small enough to type back after `--seed`.
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    ChaCha8Rng::seed_from_u64(nanos ^ u64::from(std::process::id())).gen_range(1..1_000_000)
}

/// The random stream of one check.
pub fn check_rng(seed: u64, exercise: &str, check: &str) -> ChaCha8Rng {
    // FNV-1a: stable across Rust versions and platforms, unlike std's DefaultHasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in exercise.bytes().chain([b'/']).chain(check.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    ChaCha8Rng::seed_from_u64(seed ^ h)
}

/// Generates every variable of an exercise, in file order. Tokens (`gen = "jwt"`) are left out:
/// the engine mints them afterwards, from these values.
/// A random (version 4) UUID from `rng`, so a seed replays it.
pub fn uuid_v4(rng: &mut impl Rng) -> String {
    let mut b: [u8; 16] = rng.gen();
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

pub fn generate(vars: &[(String, VarGen)], rng: &mut ChaCha8Rng) -> Scope {
    vars.iter()
        .filter_map(|(name, gen)| Some((name.clone(), value(gen, rng)?)))
        .collect()
}

fn value(gen: &VarGen, rng: &mut ChaCha8Rng) -> Option<Value> {
    Some(match gen {
        VarGen::Sku => Value::String(format!("SKU-{:06X}", rng.gen_range(0..0x100_0000u32))),
        VarGen::Words { count } => {
            let words: Vec<&str> = (0..*count).map(|_| word(rng)).collect();
            let mut text = words.join(" ");
            if let Some(first) = text.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            Value::String(text)
        }
        VarGen::Int { min, max } => Value::from(rng.gen_range(*min..=*max)),
        VarGen::Uuid => Value::String(uuid_v4(rng)),
        VarGen::Email => Value::String(format!(
            "{}.{}{}@example.test",
            word(rng),
            word(rng),
            rng.gen_range(10..100)
        )),
        VarGen::Slug => Value::String(format!(
            "{}-{}-{}",
            word(rng),
            word(rng),
            rng.gen_range(10..100)
        )),
        VarGen::Pick(values) => Value::String(values[rng.gen_range(0..values.len())].clone()),
        VarGen::Repeat { text, count } => Value::String(text.repeat(*count)),
        VarGen::Jwt(_) => return None,
    })
}

fn word(rng: &mut ChaCha8Rng) -> &'static str {
    WORDS[rng.gen_range(0..WORDS.len())]
}

// Plain, inoffensive words for product names and slugs.
const WORDS: &[&str] = &[
    "amber", "anchor", "apple", "aspen", "basil", "beacon", "birch", "blue", "brass", "breeze",
    "bronze", "canvas", "cedar", "cherry", "cloud", "cobalt", "copper", "coral", "cotton", "crane",
    "crimson", "crystal", "daisy", "delta", "dune", "ember", "enamel", "falcon", "fern", "field",
    "flint", "forest", "garnet", "ginger", "glacier", "granite", "harbor", "hazel", "heron",
    "indigo", "iris", "ivory", "jade", "juniper", "kettle", "lagoon", "lantern", "lemon", "linen",
    "maple", "marble", "meadow", "mint", "moss", "mug", "nickel", "oak", "ocean", "olive", "onyx",
    "orchid", "otter", "pebble", "pepper", "pine", "plum", "prairie", "quartz", "quill", "raven",
    "reed", "river", "rose", "saffron", "sage", "sand", "satin", "silver", "slate", "spruce",
    "stone", "summit", "teak", "thistle", "tide", "timber", "topaz", "tulip", "umber", "velvet",
    "violet", "walnut", "willow", "wool", "yarrow", "zephyr",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_data_and_checks_differ() {
        let vars = vec![
            ("sku".to_string(), VarGen::Sku),
            ("n".to_string(), VarGen::Words { count: 3 }),
            ("id".to_string(), VarGen::Uuid),
        ];
        let a = generate(&vars, &mut check_rng(42, "ex", "one"));
        let b = generate(&vars, &mut check_rng(42, "ex", "one"));
        let c = generate(&vars, &mut check_rng(42, "ex", "two"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let id = a["id"].as_str().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }

    #[test]
    fn repeat_gives_an_exact_length_and_leaves_the_stream_alone() {
        let repeat = VarGen::Repeat {
            text: "é".into(),
            count: 200,
        };
        let mut rng = check_rng(42, "ex", "one");
        let v = value(&repeat, &mut rng).unwrap();
        assert_eq!(v.as_str().unwrap().chars().count(), 200);
        assert_eq!(v.as_str().unwrap().len(), 400);
        // A fixed value draws nothing from the stream: variables after it keep their values.
        let after = value(&VarGen::Slug, &mut rng);
        assert_eq!(after, value(&VarGen::Slug, &mut check_rng(42, "ex", "one")));
    }
}
