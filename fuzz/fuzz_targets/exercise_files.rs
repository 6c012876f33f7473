//! An exercise's `exercise.toml` as an instructor may write it, the first byte picking the
//! exercise; see `grader::fuzzing::ExerciseFuzzer`.
#![no_main]

use std::sync::OnceLock;

use grader::fuzzing::ExerciseFuzzer;

static EXERCISES: OnceLock<ExerciseFuzzer> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    EXERCISES
        .get_or_init(|| ExerciseFuzzer::new().expect("a temp copy of exercises/"))
        .run(data)
});
