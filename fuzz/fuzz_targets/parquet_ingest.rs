#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let scratch = std::env::temp_dir().join(format!("pretext-fuzz-{}.parquet", std::process::id()));
    pretext_fuzz::guarded(|| pretext_fuzz::parquet_ingest(data, &scratch));
});
