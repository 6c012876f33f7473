//! `grader.toml` as a learner may write it; see `grader::fuzzing::grader_toml`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| grader::fuzzing::grader_toml(data));
