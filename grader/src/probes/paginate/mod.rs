//! `paginate`: creates data through the API, walks a paginated list (with writes in between when
//! asked), and judges every page and the walk as a whole against the data the grader created.

pub mod cursor;
mod order;
pub mod params;
mod run;

pub use params::{parse, Paginate as Params};
pub use run::{next_link, run};
