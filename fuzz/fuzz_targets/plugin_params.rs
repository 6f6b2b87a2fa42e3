#![no_main]

libfuzzer_sys::fuzz_target!(
    |data: &[u8]| pretext_fuzz::guarded(|| pretext_fuzz::plugin_params(data))
);
