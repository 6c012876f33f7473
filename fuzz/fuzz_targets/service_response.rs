//! An HTTP response as a service may send it; see `grader::fuzzing::service_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| grader::fuzzing::service_response(data));
