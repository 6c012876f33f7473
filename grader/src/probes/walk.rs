//! What a walk through a paginated list remembers of the items it saw, bounded. A page body is
//! at most 1 MiB (`engine::http::MAX_BODY_BYTES`) and a walk may go hundreds of pages, so a
//! service listing tiny or huge ids would otherwise make the grader hold hundreds of MB.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, BuildHasherDefault};

/// Distinct items a walk tracks; past this it stops with a failure. The shipped walks see a few
/// thousand at most (a `paginate` seed is at most 2000 items, and an unfiltered list also holds
/// other checks' items; a `deep_pages` walk reads 50 pages of 20).
pub const MAX_WALK_ITEMS: usize = 100_000;

/// Bytes of an id remembered; see [`id_key`].
const MAX_ID_BYTES: usize = 128;

/// How a walk remembers an id: the id itself when short (all honest ids: numbers, UUIDs), else
/// its first bytes and a hash of the whole, so distinct long ids stay distinct and still read
/// well in a message.
pub fn id_key(id: &str) -> String {
    if id.len() <= MAX_ID_BYTES {
        return id.to_string();
    }
    let mut cut = MAX_ID_BYTES / 2;
    while !id.is_char_boundary(cut) {
        cut -= 1;
    }
    // Fixed keys: the same id gives the same key in every run (messages are replayable).
    let hash =
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(id);
    format!("{}… ({} bytes, hash {hash:016x})", &id[..cut], id.len())
}

/// The items a walk has seen, by [`id_key`], with the pages each was on: at most
/// [`MAX_WALK_ITEMS`] of them.
#[derive(Default)]
pub struct SeenItems {
    by_id: BTreeMap<String, Pages>,
}

/// More distinct items than a walk tracks.
#[derive(Debug)]
pub struct TooManyItems;

impl SeenItems {
    /// Notes `id` on `page`, and returns the pages it was on so far (this one included).
    pub fn see(&mut self, id: &str, page: usize) -> Result<&Pages, TooManyItems> {
        let key = id_key(id);
        if !self.by_id.contains_key(&key) && self.by_id.len() >= MAX_WALK_ITEMS {
            return Err(TooManyItems);
        }
        let pages = self.by_id.entry(key).or_default();
        pages.push(page);
        Ok(pages)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(&id_key(id))
    }

    /// How many distinct items.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Each item (as [`id_key`] shows it) and its pages, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Pages)> {
        self.by_id.iter()
    }
}

/// The pages an item was on: the first few, and how many times in all.
#[derive(Debug, Default)]
pub struct Pages {
    listed: Vec<usize>,
    pub times: usize,
}

impl Pages {
    /// Pages listed per item; an item on more is counted only (a walk is up to 500 pages).
    const MAX_LISTED: usize = 10;

    fn push(&mut self, page: usize) {
        self.times += 1;
        if self.listed.len() < Self::MAX_LISTED {
            self.listed.push(page);
        }
    }

    /// The first page the item was on.
    pub fn first(&self) -> usize {
        self.listed[0]
    }

    /// "1, 3 and 5", or "1, 2, 3, … (40 times in all)".
    pub fn describe(&self) -> String {
        if self.times == self.listed.len() {
            return join_pages(&self.listed);
        }
        format!(
            "{}, … ({} times in all)",
            self.listed
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            self.times
        )
    }
}

fn join_pages(pages: &[usize]) -> String {
    match pages.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!(
            "{} and {last}",
            rest.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => pages.iter().map(usize::to_string).collect(),
    }
}

/// The failure when a walk sees more than [`MAX_WALK_ITEMS`] distinct items.
pub fn too_many_items(page: &str) -> crate::engine::Failure {
    crate::engine::Failure::Fail(crate::engine::FailInfo {
        message: format!(
            "by {page} the list had shown more than {MAX_WALK_ITEMS} distinct items; the grader stops there (the check's data is far fewer)"
        ),
        expected: "the items of the check's data, each on one page".into(),
        actual: format!("more than {MAX_WALK_ITEMS} distinct items"),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_read_well() {
        assert_eq!(join_pages(&[2, 3]), "2 and 3");
        assert_eq!(join_pages(&[1, 4, 9]), "1, 4 and 9");
    }

    #[test]
    fn a_walk_tracks_a_bounded_number_of_items_and_pages() {
        let mut seen = SeenItems::default();
        for page in 1..=500 {
            assert_eq!(seen.see("same", page).unwrap().times, page);
        }
        let same = seen.iter().next().unwrap().1;
        assert_eq!((same.listed.len(), same.first()), (Pages::MAX_LISTED, 1));
        assert_eq!(
            same.describe(),
            "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, … (500 times in all)"
        );
        for i in 1..MAX_WALK_ITEMS {
            seen.see(&i.to_string(), 1).unwrap();
        }
        assert_eq!(seen.len(), MAX_WALK_ITEMS);
        assert!(seen.see("one more", 2).is_err());
        assert!(seen.see("same", 2).is_ok());
        assert!(seen.contains("42") && !seen.contains("one more"));
    }

    #[test]
    fn long_ids_are_remembered_short_and_distinct() {
        assert_eq!(id_key("42"), "42");
        let a = format!("{}a", "x".repeat(1_000_000));
        let b = format!("{}b", "x".repeat(1_000_000));
        let (ka, kb) = (id_key(&a), id_key(&b));
        assert_ne!(ka, kb);
        assert!(ka.len() < 2 * MAX_ID_BYTES, "{}", ka.len());
        assert_eq!(ka, id_key(&a));
    }
}
